# Stage 2 (CT): slice-wise parallel-beam projection, then one reconstruction per method.


rule simulate_ct:
    """Project the test volumes for one setting (sparse view or limited angle)."""
    input:
        manifest=f"{RESULTS}/data/ct/{{dataset}}/manifest.json",
    output:
        measurements=f"{RESULTS}/ct/{{dataset}}/{{setting}}/measurements.h5",
        target=f"{RESULTS}/ct/{{dataset}}/{{setting}}/target.h5",
    log:
        "logs/simulate_ct/{dataset}/{setting}.log",
    threads: THREADS
    priority: simulate_priority("ct")
    params:
        seed=config["seed"],
        projector=config.get("ct", {}).get("projector", "linear"),
        max_cases=config.get("ct", {}).get("max_cases"),
        noise=config.get("ct", {}).get("noise"),
    conda:
        ENV
    script:
        "../scripts/simulate.py"


rule reconstruct_ct:
    """Reconstruct every test volume of one CT setting with one method."""
    input:
        unpack(reconstruct_ct_inputs),
    output:
        f"{RESULTS}/ct/{{dataset}}/{{setting}}/{{method}}/recon.h5",
    log:
        "logs/reconstruct_ct/{dataset}/{setting}/{method}.log",
    threads: THREADS
    priority: method_priority("ct")
    resources:
        gpu=gpu_request("ct"),
    params:
        method_params=method_params_ct,
    conda:
        ENV
    script:
        "../scripts/reconstruct.py"
