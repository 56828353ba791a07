# Pre-training of the demo backbone (the stand-in for the paper's ImageNet weights): one
# job, needed only when a trained variant's model.pretrained is "synthetic". Its output is
# a timm ViT state_dict that train_model loads exactly as it loads the published file.


rule pretrain_backbone:
    output:
        weights=PRETRAINED_BACKBONE,
        history=PRETRAINED_HISTORY,
    params:
        settings=lambda wc: plan.write_settings("pretrain", plan.pretrain_settings(config)),
        **code_params("pretrain-backbone", switches=NO_METHOD_SWITCHES),
    threads: config["pretrain"]["threads"]  # the job uses exactly pretrain.threads (results depend on it)
    conda:
        CONDA_ENV
    log:
        "logs/pretrain/backbone.log",
    benchmark:
        "logs/pretrain/backbone.benchmark.tsv"
    shell:
        "atreid pretrain-backbone --settings {params.settings:q} --out {output.weights:q}"
        " --history {output.history:q} 2> {log:q}"
