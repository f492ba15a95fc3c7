# The two commands of the README. Both create .venv and install what they need first.
.PHONY: run test setup
setup:
	bash scripts/setup.sh
run: setup
	bash scripts/run.sh $(ARGS)
test: setup
	bash scripts/test.sh
