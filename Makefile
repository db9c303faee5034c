# `make demo` and `make test` set everything up in .venv first: the runtime dependencies of
# requirements.txt and the test tools of requirements-test.txt. `make setup` is idempotent and does
# nothing when neither requirements file, setup.py, setup.cfg nor package.xml changed since its last run.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
# GPU users: `make setup TORCH_SPEC=torch==2.13.0` on a machine whose pip serves the CUDA build
# (PyPI's default Linux wheel), or install any CUDA torch into .venv before `make setup`.
TORCH_SPEC ?= torch==2.13.0
STAMP := $(VENV)/.mvp-setup-done
PYTEST_ARGS ?=

.PHONY: setup test lint demo demo-lowdim clean

setup: $(STAMP)

$(STAMP): requirements.txt requirements-test.txt setup.py setup.cfg package.xml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install --quiet "$(TORCH_SPEC)"
	$(PY) -m pip install --quiet -r requirements.txt -r requirements-test.txt
	$(PY) -m pip install --quiet --no-deps robomimic==0.3.0
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $@

test: setup lint
	MUJOCO_GL=egl $(PY) -m pytest $(PYTEST_ARGS)

lint: setup
	$(VENV)/bin/ruff check mvp_ros test benchmarks launch

# The camera policy (cameras and proprioception, as on a real robot); demo-lowdim: the policy that
# also reads the simulator's cube pose.
demo: setup
	MUJOCO_GL=egl $(VENV)/bin/mvp demo --checkpoint models/lift_image --temporal-ensemble --episodes 10 --json demo_results.json

demo-lowdim: setup
	MUJOCO_GL=egl $(VENV)/bin/mvp demo --checkpoint models/lift_lowdim --temporal-ensemble --episodes 10 --json demo_results.json

clean:
	rm -rf $(VENV) build install log *.egg-info
