# Python binding: included by the top Makefile.
#   make python        build buttress._core in place (python/buttress/)
#   make test-python   install pytest/hypothesis/mypy if missing, build, run pytest
PYTHON_TESTS := test-python
PY_TEST_DEPS := pytest hypothesis mypy setuptools wheel matplotlib prometheus_client \
  opentelemetry-api opentelemetry-sdk
PY_TEST_IMPORTS := pytest, hypothesis, mypy, setuptools, wheel, matplotlib, prometheus_client, \
  opentelemetry.metrics, opentelemetry.sdk.metrics

.PHONY: python test-python python-deps

python:
	@$(PYTHON) setup.py -q build_ext --inplace --build-temp $(BUILD)/python >/dev/null

python-deps:
	@$(PYTHON) -c "import $(PY_TEST_IMPORTS)" 2>/dev/null || \
	  $(PYTHON) -m pip install -q $(PY_TEST_DEPS) 2>/dev/null || \
	  $(PYTHON) -m pip install -q --break-system-packages $(PY_TEST_DEPS)

# pytest's own summary line is the last thing printed.
test-python: python-deps python
	@PYTHONPATH=python $(PYTHON) -m pytest tests/python -q -p no:cacheprovider
