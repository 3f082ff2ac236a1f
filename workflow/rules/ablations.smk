# The ablation study (config/ablations.yaml): every configuration x cell x seed trained by the grid's own job
# (`pydiffusion train --classifier ...`: resumable, one trainer per directory), with two reference classifiers
# of different architectures, aggregated into {results}/report.md, summary.json and figures/.
# Included by the Snakefile instead of report.smk when the config has an `ablations:` section.
localrules:
    ablation_config,


wildcard_constraints:
    ablation="|".join(map(re.escape, STUDY.configs)),
    arch="|".join(A["classifiers"]),


# Each reference classifier once, with its own seed, on one thread (its features, and FD-1D, then do not
# depend on the machine's cores).
rule reference_classifier:
    input:
        data=rules.data.output,
    output:
        f"{R}/classifier-{{arch}}.pt",
    log:
        f"{R}/logs/classifier-{{arch}}.log",
    benchmark:
        f"{R}/benchmarks/classifier-{{arch}}.tsv"
    container:
        CONTAINER
    threads: 1
    resources:
        mem_mb=2000,
        runtime=15,
        cpus_per_task=1,
    params:
        seed=lambda w: A["classifiers"][w.arch],
        epochs=A["classifier_epochs"],
    shell:
        "pydiffusion classifier --arch {wildcards.arch} --seed {params.seed} --epochs {params.epochs} "
        "--cache {input.data} --threads {threads} --out {output} > {log} 2>&1"


# A configuration's training config (the shared train: section, its overrides, its epochs): a changed
# configuration rewrites it and retrains its runs from scratch (--restart-on-config-change).
rule ablation_config:
    output:
        f"{R}/configs/{{ablation}}.yaml",
    log:
        f"{R}/logs/configs/{{ablation}}.log",
    params:
        cfg=lambda w: STUDY.configs[w.ablation],
    run:
        from pydiffusion.files import save_text

        save_text(yaml.safe_dump(params.cfg, sort_keys=False), output[0])


# One process per configuration, cell and seed, as the grid's train rule: training, metrics.json (with the
# per-timestep test MSE), quality.json with every classifier and `draws` sample sets, samples.pt. The
# dearest jobs first.
rule ablation_train:
    input:
        data=rules.data.output,
        config=rules.ablation_config.output,
        classifiers=CLASSIFIER_FILES,
    output:
        model=f"{RUN_DIR}/model.pt",
        history=f"{RUN_DIR}/history.json",
        metrics=f"{RUN_DIR}/metrics.json",
        quality=f"{RUN_DIR}/quality.json",
        samples=f"{RUN_DIR}/samples.pt",
    log:
        f"{R}/logs/train/{{ablation}}-{{loss}}-{{noise}}-seed{{seed}}.log",
    benchmark:
        f"{R}/benchmarks/train/{{ablation}}-{{loss}}-{{noise}}-seed{{seed}}.tsv"
    priority: lambda w: round(run_cost(w))
    container:
        CONTAINER
    threads: max(1, TRAIN["threads"])
    resources:
        **{k: TRAIN_RES[k] for k in ("gpu_model", "gres") if TRAIN_RES.get(k)},
        mem_mb=TRAIN_RES.get("mem_mb", 3000),
        runtime=run_minutes,
        cpus_per_task=max(1, TRAIN["threads"]),
        gpu=TRAIN_RES.get("gpus", 0),
    params:
        out=lambda w, output: os.path.dirname(output.model),
        name=lambda w: f"{w.ablation}-{w.loss}-{w.noise}-seed{w.seed}",
        n=config["quality_samples"],
        draws=A["draws"],
        n_samples=config["samples"],
    shell:
        'echo "host $(hostname) SLURM_JOB_ID=${{SLURM_JOB_ID:-none}} runtime={resources.runtime}min" >> {log}; '
        "pydiffusion train --wait --restart-on-config-change --config {input.config} --out {params.out} "
        "--classifier {input.classifiers} --quality-samples {params.n} --quality-draws {params.draws} "
        "--samples {params.n_samples} --set loss={wildcards.loss} noise={wildcards.noise} seed={wildcards.seed} "
        "threads={threads} data_cache={input.data} wandb_name={params.name} >> {log} 2>&1"


rule ablation_report:
    input:
        metrics=[f"{run}/metrics.json" for run in ABLATION_RUNS],
        quality=[f"{run}/quality.json" for run in ABLATION_RUNS],
        histories=[f"{run}/history.json" for run in ABLATION_RUNS],
        classifiers=CLASSIFIER_FILES,
        data=rules.data.output,
    output:
        summary=f"{R}/summary.json",
        markdown=report(
            f"{R}/report.md",
            caption="../report/ablations_md.rst",
            category="Ablations",
        ),
        curves=report(
            f"{R}/figures/curves.png",
            caption="../report/ablations_curves.rst",
            category="Ablations",
        ),
        effects=report(
            f"{R}/figures/effects.png",
            caption="../report/ablations_effects.rst",
            category="Ablations",
        ),
    log:
        f"{R}/logs/report.log",
    benchmark:
        f"{R}/benchmarks/report.tsv"
    container:
        CONTAINER
    threads: 1
    params:
        runs=ABLATION_RUNS,
        cells=STUDY.cells,
        families=STUDY.families,
        configs=STUDY.configs,
        section=A,
        n=config["quality_samples"],
        results=lambda w, output: os.path.dirname(output.summary),
    script:
        "../scripts/ablations_report.py"
