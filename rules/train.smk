# Training: one job per (variant, seed) -- every variant listed in params.yaml except
# those naming a reference_checkpoint (rules/reference.smk imports them instead) times
# every seed of `seeds` -- into models/{variant}/seed{seed}/.
# In-progress checkpoints live in checkpoints/{variant}/seed{seed}/ (not a declared output, so the
# deletion of outputs snakemake does before a job cannot destroy them): an interrupted
# job resumes from its last complete epoch when it is run again.


rule train_model:
    input:
        index=DATA.sampled_index,
        labels=DATA.labels,
        images=DATA.images,
        pretrained=pretrained_input,
    output:
        model="models/{variant}/seed{seed}/model.pt",
        history="models/{variant}/seed{seed}/history.csv",
    params:
        settings=variant_settings,
        images_root=f"{DATA.images}/AT-USTC",
        checkpoint_dir="checkpoints/{variant}/seed{seed}",
        # model.pretrained "synthetic": the pretrain_backbone stage's file (rules/pretrain.smk).
        pretrained_file=lambda wc, input: ["--pretrained-file", *input.pretrained] if synthetic_backbone(wc) else [],
    wildcard_constraints:
        variant=one_of(TRAINED_VARIANTS),
    threads: training_threads
    resources:
        # One GPU per device the variant trains on (DDP when train.devices > 1).
        gpu=lambda wc: resolve_variant(config, wc.variant, int(wc.seed))["train"]["devices"],
    conda:
        CONDA_ENV
    log:
        "logs/train/{variant}/seed{seed}.log",
    benchmark:
        "logs/train/{variant}/seed{seed}.benchmark.tsv"
    shell:
        "atreid train --variant-json {params.settings:q} --index {input.index:q} --labels {input.labels:q}"
        " --images {params.images_root:q} --out {output.model:q} --history {output.history:q}"
        " --checkpoint-dir {params.checkpoint_dir:q} --threads {threads:q} {params.pretrained_file:q} 2> {log:q}"
