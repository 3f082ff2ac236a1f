rule aggregate:
    input:
        metrics=expand("{run}/metrics.json", run=RUNS),
        histories=expand("{run}/history.json", run=RUNS),
        samples=expand("{run}/samples.pt", run=RUNS),
        quality=expand("{run}/quality.json", run=RUNS),
        classifier=rules.classifier.output,
        noisy_classifiers=expand(
            f"{R}/noisy_classifiers/{{noise}}.pt", noise=config["grid"]["noise"]
        ),
        data=rules.data.output,
    output:
        summary_json=f"{R}/summary.json",
        summary_csv=report(
            f"{R}/summary.csv", caption="../report/summary.rst", category="Results"
        ),
        markdown=report(
            f"{R}/report.md", caption="../report/report_md.rst", category="Results"
        ),
        loss_curves=report(
            f"{R}/figures/loss_curves.png",
            caption="../report/loss_curves.rst",
            category="Training",
        ),
        components=report(
            f"{R}/figures/components.png",
            caption="../report/components.rst",
            category="Training",
        ),
        metrics=report(
            f"{R}/figures/metrics.png",
            caption="../report/metrics.rst",
            category="Results",
        ),
        paired=report(
            f"{R}/figures/paired.png",
            caption="../report/paired.rst",
            category="Results",
        ),
        test_mse_t=report(
            f"{R}/figures/test_mse_t.png",
            caption="../report/test_mse_t.rst",
            category="Results",
        ),
        samples=report(
            f"{R}/figures/samples.png",
            caption="../report/samples.rst",
            category="Samples",
        ),
        class_grid=report(
            f"{R}/figures/best_per_class.png",
            caption="../report/best_per_class.rst",
            category="Samples",
        ),
        trajectory=report(
            f"{R}/figures/trajectory.png",
            caption="../report/trajectory.rst",
            category="Samples",
        ),
        trajectory_gif=report(
            f"{R}/figures/trajectory.gif",
            caption="../report/trajectory.rst",
            category="Samples",
        ),
        forward_reverse=report(
            f"{R}/figures/forward_reverse.png",
            caption="../report/forward_reverse.rst",
            category="Samples",
        ),
        samplers=f"{R}/samplers.json",
        guidance=f"{R}/guidance.json",
        best_model=f"{R}/best-model/model.safetensors",
        best_model_card=report(
            f"{R}/best-model/README.md",
            caption="../report/best_model.rst",
            category="Results",
        ),
        guidance_fig=report(
            f"{R}/figures/guidance.png",
            caption="../report/guidance.rst",
            category="Samplers",
        ),
        samplers_fig=report(
            f"{R}/figures/samplers.png",
            caption="../report/samplers.rst",
            category="Samplers",
        ),
    log:
        f"{R}/logs/aggregate.log",
    benchmark:
        f"{R}/benchmarks/aggregate.tsv"
    container:
        CONTAINER
    threads: 2
    params:
        runs=RUNS,
        results=lambda w, output: os.path.dirname(output.summary_json),
        n=config["quality_samples"],
    script:
        "../scripts/aggregate.py"
