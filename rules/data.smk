# AT-USTC data stage: generate-or-import -> verify/index -> sample frames.


rule prepare_atustc:
    input:
        atustc_source_input,
    output:
        directory(DATA.images),
    params:
        source=lambda wc: as_json(atustc_source_settings()[0]),
        synthetic=lambda wc: as_json(atustc_source_settings()[1]),
        record=DATA.record,
    threads: 2
    conda:
        CONDA_ENV
    log:
        "logs/data/prepare_atustc.log",
    benchmark:
        "logs/data/prepare_atustc.benchmark.tsv"
    shell:
        "atreid prepare-atustc --source {params.source} --synthetic {params.synthetic}"
        " --out {output} --record {params.record} --threads {threads} 2> {log}"


rule index_atustc:
    input:
        DATA.images,
    output:
        index=DATA.index,
        verification=DATA.verification,
        verification_txt=DATA.verification_txt,
    params:
        expected=config["data"]["atustc"]["expected_counts"],
    threads: config["data"]["atustc"]["decode_workers"]
    conda:
        CONDA_ENV
    log:
        "logs/data/index_atustc.log",
    benchmark:
        "logs/data/index_atustc.benchmark.tsv"
    shell:
        "atreid index-atustc --images {input} --expected {params.expected} --workers {threads}"
        " --index {output.index} --report {output.verification} --report-txt {output.verification_txt} 2> {log}"


rule sample_frames:
    input:
        DATA.index,
    output:
        index=DATA.sampled_index,
        labels=DATA.labels,
    params:
        frames_per_clip=config["data"]["atustc"]["frames_per_clip"],
    conda:
        CONDA_ENV
    log:
        "logs/data/sample_frames.log",
    benchmark:
        "logs/data/sample_frames.benchmark.tsv"
    shell:
        "atreid sample-frames --index {input} --frames-per-clip {params.frames_per_clip}"
        " --out {output.index} --labels {output.labels} 2> {log}"
