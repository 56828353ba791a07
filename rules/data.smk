# AT-USTC data stage: generate-or-import -> install -> verify/index -> sample frames.
#
# The import's declared output is a small manifest, not the images folder: Snakemake
# deletes a job's outputs before the job runs, so a folder output would be gone before
# the import could refuse a changed archive. prepare_atustc builds the new copy beside
# the old one (data/atustc/.images.staged) and writes the manifest only on success;
# install_atustc then swaps it in. A refused import leaves images/, index.csv and
# everything downstream as they were (atreid/commands/data.py).

# How much an imported archive may extract to (data.max_expansion, data.max_extracted_gib).
# Handed to the prepare jobs in the environment (every job's Snakemake process parses
# this file) rather than as params: raising a safety limit must not redo an import that
# already succeeded, nor everything downstream of it.
os.environ.update(ATREID_MAX_EXPANSION=str(config["data"]["max_expansion"]),
                  ATREID_MAX_EXTRACTED_GIB=str(config["data"]["max_extracted_gib"]))
ATUSTC_MANIFEST = f"{DATA_DIR}/atustc/prepared.json"


rule prepare_atustc:
    input:
        atustc_source_input,
    output:
        ATUSTC_MANIFEST,
    params:
        source=lambda wc: as_json(plan.atustc_source_settings(config)[0]),
        synthetic=lambda wc: as_json(plan.atustc_source_settings(config)[1]),
        record=DATA.record,
        images=DATA.images,
        **code_params("prepare-atustc"),
    threads: 2
    conda:
        CONDA_ENV
    log:
        "logs/data/prepare_atustc.log",
    benchmark:
        "logs/data/prepare_atustc.benchmark.tsv"
    shell:
        "atreid prepare-atustc --source {params.source:q} --synthetic {params.synthetic:q}"
        " --out {params.images:q} --manifest {output:q} --record {params.record:q} --threads {threads}"
        ' --max-expansion "$ATREID_MAX_EXPANSION" --max-extracted-gib "$ATREID_MAX_EXTRACTED_GIB" 2> {log:q}'


rule install_atustc:
    input:
        manifest=ATUSTC_MANIFEST,
        # Also the source: a copy that changed after a refused import must be refused
        # again on every run, not left out of date once its manifest is gone.
        source=atustc_source_input,
    output:
        directory(DATA.images),
    params:
        **code_params("install-images"),
    localrule: True
    conda:
        CONDA_ENV
    log:
        "logs/data/install_atustc.log",
    shell:
        "atreid install-images --manifest {input.manifest:q} --out {output:q} --rule prepare_atustc 2> {log:q}"


rule index_atustc:
    input:
        DATA.images,
    output:
        index=DATA.index,
        verification=DATA.verification,
        verification_txt=DATA.verification_txt,
    params:
        expected=config["data"]["atustc"]["expected_counts"],
        count_differences=config["data"]["atustc"]["count_differences"],
        **code_params("index-atustc"),
    threads: config["data"]["atustc"]["decode_workers"]
    conda:
        CONDA_ENV
    log:
        "logs/data/index_atustc.log",
    benchmark:
        "logs/data/index_atustc.benchmark.tsv"
    shell:
        "atreid index-atustc --images {input:q} --expected {params.expected:q}"
        " --count-differences {params.count_differences:q} --workers {threads}"
        " --index {output.index:q} --report {output.verification:q}"
        " --report-txt {output.verification_txt:q} 2> {log:q}"


rule sample_frames:
    input:
        DATA.index,
    output:
        index=DATA.sampled_index,
        labels=DATA.labels,
    params:
        frames_per_clip=config["data"]["atustc"]["frames_per_clip"],
        **code_params("sample-frames"),
    conda:
        CONDA_ENV
    log:
        "logs/data/sample_frames.log",
    benchmark:
        "logs/data/sample_frames.benchmark.tsv"
    shell:
        "atreid sample-frames --index {input:q} --frames-per-clip {params.frames_per_clip:q}"
        " --out {output.index:q} --labels {output.labels:q} 2> {log:q}"
