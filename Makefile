# Two commands do everything on a fresh Linux machine with Python >= 3.11:
#   make run    # install into .venv, then run the default grid (snakemake --cores all)
#   make test   # install into .venv, then build the docs strictly, run the test suite and the real-SLURM test (what CI runs)
# On a GPU node, before a big study: make gpu-check (clgrid doctor; exits non-zero if a check failed)
VENV  ?= .venv
PY    := $(VENV)/bin/python
CORES ?= all
# Rules call the `clgrid` CLI, so the venv's bin/ must be on PATH for snakemake's jobs.
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
export HF_HUB_OFFLINE ?= 1

.PHONY: install run test test-slurm gpu-check report docs docs-site bench clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	# A CUDA build of torch from PyPI takes about 6 GB in the venv: say so up front rather than in pip's traceback.
	@free_kb=$$(df -Pk . | awk 'NR==2 {print $$4}'); if [ "$$free_kb" -lt 8000000 ]; then \
		echo "warning: $$((free_kb / 1024)) MB free here; installing torch and the rest into $(VENV) needs about 8 GB" >&2; fi
	python3 -m venv $(VENV)
	# --no-cache-dir: pip's cache would keep a second copy of every wheel (GBs for torch) on the same disk.
	# torch and torchvision must be a matching pair (torchvision's compiled ops are built against one torch):
	# the pair this project is tested with first, else any matching pair pip resolves.
	$(PY) -m pip install -q --no-cache-dir "torch==2.14.1" "torchvision==0.29.1" || $(PY) -m pip install -q --no-cache-dir "torch>=2.4,<3" "torchvision>=0.19"
	# trackers: the optional tracker export (docs/trackers.md), installed so CI reads each export back for real.
	$(PY) -m pip install -q --no-cache-dir -e ".[test,docs,trackers]"
	touch $@

run: install
	snakemake --cores $(CORES)

# The docs build goes first: it takes seconds, so a broken link fails CI before the 15-minute suite runs. Not
# --quiet: it hides the warnings that --strict turns into a failure.
test: install
	$(PY) -m mkdocs build --strict --site-dir site
	$(PY) -m pytest
	bash tests/slurm/run.sh

# The real one-node SLURM test alone (root: installs slurm-wlm with apt-get, starts and stops its own daemons).
test-slurm: install
	bash tests/slurm/run.sh

# The GPU self-check (docs/gpu-check.md): every method under the GPU's precision and fp32,
# data on the device and on the host, the feature cache, deterministic resume, ResNet-18 throughput. Without CUDA it
# says so in one line and exits 0.
gpu-check: install
	clgrid doctor --device cuda --out results/doctor/gpu_check.md

report: run
	snakemake --report report.html

docs: run
	mkdir -p docs/figures
	for b in split_digits permuted_digits; do for f in acc_matrix acc_curve forgetting summary cka_curves cka_layers rankme probe_vs_head; do \
	  cp results/figures/$$b/mlp/$$f.png docs/figures/$${b}_$$f.png; done; done
	cp results/paper/tables.md docs/results.md

# The user guide as a site in site/ (open site/index.html). --strict: a broken link, a missing page or a page left
# out of the nav fails; the config reference and the methods page are generated from the schema and the methods.
docs-site: install
	$(PY) -m mkdocs build --strict --site-dir site

bench: install
	$(PY) benchmarks/job_overhead.py

clean:
	rm -rf results .snakemake report.html
