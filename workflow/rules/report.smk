rule aggregate:
    input:
        evaluations=expand("{run}/evaluation.json", run=RUNS),
        histories=expand("{run}/history.json", run=RUNS),
        samples=expand("{run}/samples.pt", run=RUNS),
    output:
        summary_json=f"{R}/summary.json",
        summary_csv=f"{R}/summary.csv",
        markdown=f"{R}/report.md",
        loss_curves=report(f"{R}/figures/loss_curves.png", caption="../report/loss_curves.rst", category="Training"),
        components=report(f"{R}/figures/components.png", caption="../report/components.rst", category="Training"),
        metrics=report(f"{R}/figures/metrics.png", caption="../report/metrics.rst", category="Results"),
        paired=report(f"{R}/figures/paired.png", caption="../report/paired.rst", category="Results"),
        samples=report(f"{R}/figures/samples.png", caption="../report/samples.rst", category="Samples"),
    params:
        runs=RUNS,
        results=R,
    log:
        f"{R}/logs/aggregate.log",
    container: CONTAINER
    script:
        "../scripts/aggregate.py"
