rule data:
    output:
        directory(f"{R}/data"),
    log:
        f"{R}/logs/data.log",
    benchmark:
        f"{R}/benchmarks/data.tsv"
    container:
        CONTAINER
    params:
        dataset=TRAIN["dataset"],
    shell:
        "mkdir -p {output} && pydiffusion data --dataset {params.dataset} --cache {output} > {log} 2>&1"


rule train_config:
    output:
        f"{R}/train.yaml",
    log:
        f"{R}/logs/train_config.log",
    benchmark:
        f"{R}/benchmarks/train_config.tsv"
    params:
        shared=SHARED,
    run:
        from pydiffusion.files import save_text

        save_text(yaml.safe_dump(params.shared, sort_keys=False), output[0])


rule classifier:
    input:
        data=rules.data.output,
    output:
        f"{R}/classifier.pt",
    log:
        f"{R}/logs/classifier.log",
    benchmark:
        f"{R}/benchmarks/classifier.tsv"
    container:
        CONTAINER
    threads: 1  # ~15 s; one thread, so that its features (and FD-1D) do not depend on the machine's cores
    resources:
        mem_mb=2000,
        runtime=15,
        cpus_per_task=1,
    params:
        dataset=TRAIN["dataset"],
    shell:
        "pydiffusion classifier --dataset {params.dataset} --cache {input.data} --threads {threads} --out {output} "
        "> {log} 2>&1"


# The noise-aware classifier p(y | x_t, t) of each noise path of the grid, for the report's comparison of
# classifier-free and classifier guidance (~20 s each, one thread).
rule noisy_classifier:
    input:
        data=rules.data.output,
    output:
        f"{R}/noisy_classifiers/{{noise}}.pt",
    log:
        f"{R}/logs/noisy_classifier-{{noise}}.log",
    benchmark:
        f"{R}/benchmarks/noisy_classifier-{{noise}}.tsv"
    container:
        CONTAINER
    threads: 1
    resources:
        mem_mb=2000,
        runtime=15,
        cpus_per_task=1,
    params:
        T=SHARED.get("T", DEFAULTS["T"]),
        schedule=SHARED.get("schedule", DEFAULTS["schedule"]),
        epochs=config["noisy_classifier_epochs"],
        dataset=TRAIN["dataset"],
    shell:
        "pydiffusion noisy-classifier --dataset {params.dataset} --cache {input.data} --noise {wildcards.noise} --T {params.T} "
        "--schedule {params.schedule} --epochs {params.epochs} --threads {threads} --out {output} > {log} 2>&1"


# One process per configuration and seed: training, the test metrics (metrics.json), then sample
# quality against the reference classifier (quality.json) and the report's samples (samples.pt).
# The resumable state (checkpoint.pt, checkpoint.prev.pt) is not an output: Snakemake deletes the
# outputs of a failed or interrupted job before it reruns it, and the rerun must resume from it.
# --wait: a trainer left running by a killed Snakemake finishes first, then this job resumes from its
# checkpoint; --restart-on-config-change: a changed train: section retrains from scratch. A retry
# (profiles/slurm: retries) gets `runtime` times the attempt number, so a job that hit its time limit
# resumes with more time. Longest first: a semi-implicit job costs about 4 implicit ones, and one
# started last would leave the other cores idle while it runs.
rule train:
    input:
        data=rules.data.output,
        config=rules.train_config.output,
        classifier=rules.classifier.output,
    output:
        model=f"{R}/runs/{{loss}}-{{noise}}-{{training}}/seed{{seed}}/model.pt",
        history=f"{R}/runs/{{loss}}-{{noise}}-{{training}}/seed{{seed}}/history.json",
        metrics=f"{R}/runs/{{loss}}-{{noise}}-{{training}}/seed{{seed}}/metrics.json",
        quality=f"{R}/runs/{{loss}}-{{noise}}-{{training}}/seed{{seed}}/quality.json",
        samples=f"{R}/runs/{{loss}}-{{noise}}-{{training}}/seed{{seed}}/samples.pt",
    log:
        f"{R}/logs/train/{{loss}}-{{noise}}-{{training}}-seed{{seed}}.log",
    benchmark:
        f"{R}/benchmarks/train/{{loss}}-{{noise}}-{{training}}-seed{{seed}}.tsv"
    priority: lambda w: TRAINING_PASSES[w.training]
    container:
        CONTAINER
    threads: max(1, TRAIN["threads"])
    resources:
        **{k: TRAIN_RES[k] for k in ("gpu_model", "gres") if TRAIN_RES.get(k)},
        mem_mb=TRAIN_RES.get("mem_mb", 3000),
        runtime=lambda w, attempt: TRAIN_RES.get("runtime", 60) * attempt,
        cpus_per_task=max(1, TRAIN["threads"]),
        gpu=TRAIN_RES.get("gpus", 0),
    params:
        out=lambda w, output: os.path.dirname(output.model),
        name=lambda w: f"{w.loss}-{w.noise}-{w.training}-seed{w.seed}",
        n=config["quality_samples"],
        n_samples=config["samples"],
    shell:
        'echo "host $(hostname) SLURM_JOB_ID=${{SLURM_JOB_ID:-none}} runtime={resources.runtime}min" >> {log}; '
        "pydiffusion train --wait --restart-on-config-change --config {input.config} --out {params.out} "
        "--classifier {input.classifier} --quality-samples {params.n} --samples {params.n_samples} "
        "--set loss={wildcards.loss} "
        "noise={wildcards.noise} training={wildcards.training} seed={wildcards.seed} threads={threads} "
        "data_cache={input.data} "
        "wandb_name={params.name} >> {log} 2>&1"
