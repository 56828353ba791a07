# Reference weights: a variant naming `reference_checkpoint` (the epoch_best.t of the
# authors' training code) is imported into models/{variant}/imported/model.pt instead of
# being trained: the variant's one run, named `imported` (the weights have no seed, so
# the list of seeds does not multiply it). The model file is the same payload a training
# job writes, so the evaluation, gallery and table rules use it unchanged ("reference
# weights" rows in the table, n = 1).
# An imported variant has no training history, hence no training plot.


rule import_reference_model:
    input:
        checkpoint=reference_checkpoint_input,
    output:
        model="models/{variant}/imported/model.pt",
    params:
        settings=import_settings_file,
        **code_params("import-checkpoint", by_variant=True),
    wildcard_constraints:
        variant=one_of(IMPORTED_VARIANTS),
    conda:
        CONDA_ENV
    log:
        "logs/import/{variant}.log",
    benchmark:
        "logs/import/{variant}.benchmark.tsv"
    shell:
        "atreid import-checkpoint {input.checkpoint:q} --variant {wildcards.variant:q}"
        " --settings {params.settings:q} --out {output.model:q} 2> {log:q}"
