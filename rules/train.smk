# Training: one job per (variant, seed) -- every variant listed in params.yaml except
# those naming a reference_checkpoint (rules/reference.smk imports them instead) times
# every seed of `seeds` -- into models/{variant}/seed{seed}/.
# In-progress checkpoints live in checkpoints/{variant}/seed{seed}/ (not a declared output, so the
# deletion of outputs snakemake does before a job cannot destroy them): an interrupted
# job resumes from its last complete epoch when it is run again.
# The training set is data.train_on's (TRAIN_DATA, rules/common.smk): AT-USTC's sampled
# frames, or a benchmark's training split labelled by label_training_split below. A
# variant needing labels that split lacks (SAID: clothes) is refused by its training job.

# Your own dataset (custom) has no synthetic miniature to train on.
if TRAIN_ON == "custom" and "custom" not in config["data"]["benchmarks"]:
    sys.exit("error: data.train_on is custom, but data.benchmarks.custom is not set; set its source to your "
             "folder or archive holding atreid.csv")


rule label_training_split:
    input:
        index=f"{DATA_DIR}/{{benchmark}}/index.csv",
        images=f"{DATA_DIR}/{{benchmark}}/images",
    output:
        index=f"{DATA_DIR}/{{benchmark}}/train_labelled.csv",
        labels=f"{DATA_DIR}/{{benchmark}}/labels.json",
    params:
        **code_params("label-training-split"),
    wildcard_constraints:
        # The benchmarks of the shared rules (AT-USTC's training set comes from sample_frames).
        benchmark=one_of(SHARED_RULE_BENCHMARKS),
    conda:
        CONDA_ENV
    log:
        "logs/data/label_training_split_{benchmark}.log",
    benchmark:
        "logs/data/label_training_split_{benchmark}.benchmark.tsv"
    shell:
        "atreid label-training-split --benchmark {wildcards.benchmark:q} --index {input.index:q}"
        " --images {input.images:q} --out {output.index:q} --labels {output.labels:q} 2> {log:q}"


rule train_model:
    input:
        index=TRAIN_DATA.index,
        labels=TRAIN_DATA.labels,
        images=TRAIN_DATA.images,
        pretrained=pretrained_input,
    output:
        model="models/{variant}/seed{seed}/model.pt",
        history="models/{variant}/seed{seed}/history.csv",
    params:
        settings=train_settings_file,
        images_root=TRAIN_DATA.images_root,
        checkpoint_dir="checkpoints/{variant}/seed{seed}",
        # model.pretrained "synthetic": the pretrain_backbone stage's file (rules/pretrain.smk).
        pretrained_file=lambda wc, input: ["--pretrained-file", *input.pretrained] if synthetic_backbone(wc) else [],
        **code_params("train", by_variant=True),
    wildcard_constraints:
        variant=one_of(TRAINED_VARIANTS),
    threads: training_threads
    resources:
        # One GPU per device the variant trains on (DDP when train.devices > 1).
        gpu=lambda wc: plan.training_devices(config, wc.variant, int(wc.seed)),
    conda:
        CONDA_ENV
    log:
        "logs/train/{variant}/seed{seed}.log",
    benchmark:
        "logs/train/{variant}/seed{seed}.benchmark.tsv"
    shell:
        "atreid train --settings {params.settings:q} --index {input.index:q} --labels {input.labels:q}"
        " --images {params.images_root:q} --out {output.model:q} --history {output.history:q}"
        " --checkpoint-dir {params.checkpoint_dir:q} --threads {threads:q} {params.pretrained_file:q} 2> {log:q}"
