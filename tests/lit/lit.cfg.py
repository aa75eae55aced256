# lit configuration for kvplan's IR, pass, frontend and CLI tests.
import os

import lit.formats

config.name = "kvplan"
config.test_format = lit.formats.ShTest(execute_external=False)
config.suffixes = [".mlir", ".toml", ".json", ".test"]
config.excludes = ["Inputs", "lit.cfg.py", "lit.site.cfg.py"]
config.test_source_root = os.path.dirname(__file__)
config.test_exec_root = os.path.join(config.kvplan_obj_root, "tests", "lit")

# Tools: ours first, then FileCheck, not and count from LLVM.
config.environment["PATH"] = os.pathsep.join(
    [config.kvplan_bin_dir, config.llvm_tools_dir, config.environment.get("PATH", "")])
config.substitutions.append(("%inputs", os.path.join(config.test_source_root, "Inputs")))
config.substitutions.append(("%data", os.path.join(config.kvplan_src_root, "tests", "data")))
config.substitutions.append(("%models", os.path.join(config.kvplan_src_root, "models")))
config.substitutions.append(("%src", config.kvplan_src_root))
config.substitutions.append(("%python", config.python_executable))
config.substitutions.append(("%{long}", "word " * 200))
config.substitutions.append(
    ("%expect-exit", "%s %s" % (config.python_executable,
                                os.path.join(config.test_source_root, "expect_exit.py"))))

# ../shared/models (KVPLAN_SHARED_DIR): tests that need it declare
# `REQUIRES: shared-models` and are reported UNSUPPORTED when it is absent.
shared = os.path.join(config.kvplan_shared_dir, "models")
config.substitutions.append(("%shared", shared))
if os.path.isdir(os.path.join(shared, "stories260K")):
    config.available_features.add("shared-models")
else:
    lit_config.note("no %s: tests that need the shared models are skipped" % shared)

# Tensor parallelism over MPI: `REQUIRES: mpi` where kvplan was built with
# MPI and mpirun exists; %mpirun lets a small machine (and root, in CI) run
# more ranks than it has cores.
if getattr(config, "kvplan_mpirun", ""):
    config.available_features.add("mpi")
    config.substitutions.append(
        ("%mpirun", config.kvplan_mpirun + " --oversubscribe --allow-run-as-root"))

# The CUDA target: `REQUIRES: cuda-build` for kvplan built with KVPLAN_CUDA
# (the CUDA runtime linked in), `nvcc` for compiling --target cuda, and
# `no-gpu` where no CUDA device can be used (every CI machine).
import shutil, subprocess
if getattr(config, "kvplan_cuda", "OFF").upper() in ("ON", "1", "TRUE", "YES"):
    config.available_features.add("cuda-build")
nvcc_home = os.environ.get("CUDA_HOME")
for nvcc in [os.path.join(nvcc_home, "bin", "nvcc") if nvcc_home else None,
             shutil.which("nvcc"), "/usr/local/cuda/bin/nvcc"]:
    if nvcc and os.path.exists(nvcc):
        config.available_features.add("nvcc")
        config.substitutions.append(("%nvcc", nvcc))
        break
try:
    gpu = subprocess.run(["nvidia-smi", "-L"], capture_output=True, timeout=10).returncode == 0
except Exception:
    gpu = False
if not gpu:
    config.available_features.add("no-gpu")

# Structured output checked by pydantic 2's own validation: `REQUIRES:
# pydantic` where the Python running lit has it (not every machine does).
try:
    pyd = subprocess.run([config.python_executable, "-c",
                          "import pydantic, sys; sys.exit(pydantic.VERSION < '2')"],
                         capture_output=True, timeout=60).returncode == 0
except Exception:
    pyd = False
if pyd:
    config.available_features.add("pydantic")

# llama.cpp itself, the peer the GGUF tests compare with: `REQUIRES:
# llama-cpp` where KVPLAN_NODE_LLAMA_CPP names a folder holding
# node_modules/node-llama-cpp (its prebuilt CPU binary; `npm install --prefix
# DIR node-llama-cpp@3`) and node runs. %llama-cpp-greedy prints its greedy
# ids as `kvplan run --print-ids` does (scripts/llama-cpp-greedy.mjs).
node_llama_cpp = os.environ.get("KVPLAN_NODE_LLAMA_CPP", "")
if node_llama_cpp and shutil.which("node") and os.path.isdir(
        os.path.join(node_llama_cpp, "node_modules", "node-llama-cpp")):
    config.available_features.add("llama-cpp")
    config.environment["KVPLAN_NODE_LLAMA_CPP"] = node_llama_cpp
    config.substitutions.append(
        ("%llama-cpp-greedy", "node " + os.path.join(config.kvplan_src_root, "scripts",
                                                     "llama-cpp-greedy.mjs")))
