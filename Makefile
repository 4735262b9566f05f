# make run: set up .venv and start a local 3-node cluster. make test: set up, then ruff and
# every test but the soak-length variants (838 s on 2 quiet cores, 2026-12-04); make test-long: those.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test test-long lint venv clean bench sim-long fuzz

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

run: $(STAMP)
	$(BIN)/dynakv dev-cluster --nodes 3 --data-dir ./data

test: $(STAMP)
	$(BIN)/ruff check src tests
	$(BIN)/python -m pytest -q

# The soak-length variants that `make test` leaves out (pytest marker `long`; pyproject's
# addopts deselect it) and runs shorter or in one security mode: 2,000 idle connections per
# port (6,000; make test 2,100 in all), join/leave/remove under a 60-second load open and
# secure (make test: secure, as long as the changes take, 5 s at least), the SIGKILL cart
# nemesis open (make test: secure), the console's join after 40,000 keys (4,000), and the
# simulator's whole seed windows (make test: their first halves). Runs only these, not what
# make test runs.
test-long: $(STAMP)
	$(BIN)/python -m pytest -q -m long

# The table in benchmarks/README.md: several minutes; not part of `make test`.
bench: $(STAMP)
	$(BIN)/python benchmarks/run.py

# Simulator soak: SIM_LONG_SEEDS of every workload with every fault (`make test` runs 100,
# `make test-long` 200; of the DynamoDB workload, ddb, 40 and 80), then SIM_LONG_DC_SEEDS
# of cart, register and lww in two data centers of three racks (WAN delays, whole data
# centers cut off and crashed; 100, and 200), and as many with three replicas per data
# center written at each_quorum, where a crashed data center may come back wiped (30, and
# 60); and as many lowering every bucket type mid-run (20), and on WalEngines on disk (15,
# and 30). About 25 min per workload per core for 10,000 seeds; not part of `make test`.
# Fails if any seed breaks an invariant.
SIM_LONG_SEEDS ?= 1-10000
SIM_LONG_DC_SEEDS ?= 1-2000
SIM_JOBS ?= 2
sim-long: $(STAMP)
	status=0; for workload in cart register lww ddb; do \
		$(BIN)/python -m dynakv.sim --seeds $(SIM_LONG_SEEDS) --nodes 5 --faults all \
			--workload $$workload --jobs $(SIM_JOBS) || status=1; \
	done; \
	for workload in cart register lww; do \
		$(BIN)/python -m dynakv.sim --seeds $(SIM_LONG_DC_SEEDS) --nodes 6 --datacenters 2 \
			--racks 3 --faults all --workload $$workload --jobs $(SIM_JOBS) || status=1; \
		$(BIN)/python -m dynakv.sim --seeds $(SIM_LONG_DC_SEEDS) --nodes 6 --datacenters 2 \
			--racks 3 --faults all --workload $$workload --jobs $(SIM_JOBS) \
			--bucket-datacenters dc1=3,dc2=3 --write-level each_quorum || status=1; \
		$(BIN)/python -m dynakv.sim --seeds $(SIM_LONG_DC_SEEDS) --nodes 5 --faults all \
			--workload $$workload --jobs $(SIM_JOBS) --lower-replication || status=1; \
		$(BIN)/python -m dynakv.sim --seeds $(SIM_LONG_DC_SEEDS) --nodes 5 --faults all \
			--workload $$workload --jobs $(SIM_JOBS) --storage wal || status=1; \
	done; exit $$status

# Fuzzing (tests/fuzz): the parsers of untrusted input (binary frames, RESP, contexts, config
# files) for FUZZ_SECONDS in all, printing executions and outcomes per target; then
# schemathesis against a live node, FUZZ_HTTP_EXAMPLES cases per operation. `make test` runs
# short, derandomized runs of both and the regression corpus. Fails if any input broke one.
FUZZ_SECONDS ?= 300
FUZZ_HTTP_EXAMPLES ?= 500
fuzz: $(STAMP)
	status=0; $(BIN)/python -m tests.fuzz.run --seconds $(FUZZ_SECONDS) || status=1; \
	FUZZ_HTTP_EXAMPLES=$(FUZZ_HTTP_EXAMPLES) $(BIN)/python -m pytest -q -s \
		tests/cluster/test_fuzz_http.py || status=1; exit $$status

lint: $(STAMP)
	$(BIN)/ruff check src tests

clean:
	rm -rf $(VENV) data
