# gastown — run `make help` for the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help

SQLC_VERSION          := v1.31.1
GOLANGCI_LINT_VERSION := v2.15.0
BIN                   := $(CURDIR)/.bin
SQLC                  := $(BIN)/sqlc
GOLANGCI_LINT         := $(BIN)/golangci-lint
GO_TEST_FLAGS         ?=

.PHONY: help
help: ## Show this help
	@grep -hE '^[a-zA-Z_/-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  \033[36m%-14s\033[0m %s\n", $$1, $$2}'

.PHONY: dev
dev: ## Run the demo town on the local database (API, workers, simulated agents)
	go run ./cmd/gastown dev

.PHONY: test
test: ## Run every test against the local PostgreSQL (GASTOWN_TEST_DATABASE_URL to change it)
	go test $(GO_TEST_FLAGS) ./...

.PHONY: test/race
test/race: ## Run the tests with the race detector
	go test -race $(GO_TEST_FLAGS) ./...

.PHONY: test/chaos
test/chaos: ## The heavy reliability suite: 60 SIGKILL rounds, 60 s of contention, 40 connection-kill rounds, each fuzzer for FUZZ_TIME (60s), the 10-minute soak (make test runs bounded versions)
	GASTOWN_CHAOS_ROUNDS=$${CHAOS_ROUNDS:-60} GASTOWN_CONTENTION_DURATION=$${CONTENTION_DURATION:-60s} go test -count=1 -timeout 60m -run 'TestWorkerKilledAtEveryStageOfATick|TestWorkerProcessesContendForTowns' -v ./cmd/gastown
	GASTOWN_KILL_ROUNDS=$${KILL_ROUNDS:-40} go test -count=1 -timeout 20m -run 'TestWorkersSurviveKilledConnections|TestSlowAndFailingAdaptersNeverHoldATick' -v ./jobs
	go test -count=1 -run 'TestInjectionInEveryStringFieldChangesNothing|TestEveryRouteRefusesStrangersAndOtherTowns' -v ./web
	go test -run '^$$' -fuzz FuzzEventPayloads -fuzztime $${FUZZ_TIME:-60s} ./jobs
	go test -run '^$$' -fuzz FuzzRequestBodies -fuzztime $${FUZZ_TIME:-60s} ./web
	go test -run '^$$' -fuzz FuzzFlatJSON -fuzztime $${FUZZ_TIME:-60s} ./db
	$(MAKE) soak

.PHONY: soak
soak: ## A 10-minute soak of the workers with simulated agents: goroutines, heap and connections must stay flat, nothing may leak (make test runs 20 s of it)
	GASTOWN_SOAK=$${SOAK_DURATION:-10m} go test -count=1 -timeout 20m -run TestSoakStaysFlat -v ./jobs

.PHONY: check/dashboard
check/dashboard: ## Render the built-in dashboard in headless Chromium (apt-get install chromium) and save screenshots/dashboard.png
	mkdir -p screenshots
	GASTOWN_CHROMIUM=1 GASTOWN_SCREENSHOT_DIR=$(CURDIR)/screenshots go test -count=1 -run TestDashboardInHeadlessChromium -v ./web

.PHONY: bench
bench: ## Go benchmarks of the pure core and the snapshot, then every `gastown bench` workload (own databases; several minutes)
	go test -run '^$$' -bench . -benchmem ./reconciler ./db
	@for w in active burst crash hot idle large; do go run ./cmd/gastown bench --workload $$w --duration $${BENCH_DURATION:-30s} || exit 1; done

.PHONY: generate
generate: $(SQLC) ## Regenerate db/internal/dbsqlc from sql/ with the pinned sqlc
	$(SQLC) generate

.PHONY: verify
verify: verify/sqlc verify/mod ## Fail when generated code or go.mod is stale

.PHONY: verify/sqlc
verify/sqlc: $(SQLC) ## Fail when db/internal/dbsqlc does not match sql/
	$(SQLC) diff
	$(SQLC) vet

.PHONY: verify/mod
verify/mod: ## Fail when go.mod or go.sum is not tidy
	go mod tidy -diff

.PHONY: lint
lint: $(GOLANGCI_LINT) ## Lint with the pinned golangci-lint (includes the layering rules)
	$(GOLANGCI_LINT) run ./...

$(SQLC):
	GOBIN=$(BIN) go install github.com/sqlc-dev/sqlc/cmd/sqlc@$(SQLC_VERSION)

$(GOLANGCI_LINT):
	GOBIN=$(BIN) go install github.com/golangci/golangci-lint/v2/cmd/golangci-lint@$(GOLANGCI_LINT_VERSION)
