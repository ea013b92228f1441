# DarKnight: the user's entry point. `make demo` and `make test` are the whole set-up.
BUILD_DIR ?= build
ASAN_DIR ?= build-asan
JOBS ?= $(shell nproc)
CMAKE_FLAGS ?=

.PHONY: all deps build test demo test-asan bench conformance format clean fuzz check-long

all: build

# Debian packages the build, tests and tools need (only the missing ones; uses apt-get).
deps:
	@scripts/install-deps.sh

# Release build into build/.
build:
	cmake -S . -B $(BUILD_DIR) -G Ninja -DCMAKE_BUILD_TYPE=Release $(CMAKE_FLAGS)
	cmake --build $(BUILD_DIR) -j $(JOBS)

# deps + build + the whole test suite.
test:
	@$(MAKE) --no-print-directory deps
	@$(MAKE) --no-print-directory build
	ctest --test-dir $(BUILD_DIR) --output-on-failure -j $(JOBS)

# deps + build + the main job on the default configuration.
demo:
	@$(MAKE) --no-print-directory deps
	@$(MAKE) --no-print-directory build
	$(BUILD_DIR)/darknight train --model fmnist-cnn --data fashion-mnist --mode darknight \
	  --virtual-batch 4 --epochs 1 --lr 0.05 --momentum 0.9 --save $(BUILD_DIR)/fmnist-cnn.dkm
	$(BUILD_DIR)/darknight infer --model fmnist-cnn --weights $(BUILD_DIR)/fmnist-cnn.dkm \
	  --data fashion-mnist --mode darknight --virtual-batch 4 --compare-plain

# The test suite under AddressSanitizer and UndefinedBehaviorSanitizer.
test-asan:
	@$(MAKE) --no-print-directory deps
	cmake -S . -B $(ASAN_DIR) -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
	  -DDARKNIGHT_SANITIZE=address,undefined -DDARKNIGHT_BUILD_BENCH=OFF $(CMAKE_FLAGS)
	cmake --build $(ASAN_DIR) -j $(JOBS)
	LSAN_OPTIONS=suppressions=$(CURDIR)/tests/lsan.supp ctest --test-dir $(ASAN_DIR) --output-on-failure -j $(JOBS)

# Accelerator micro-benchmarks (Google Benchmark).
bench: build
	$(BUILD_DIR)/bench/accel_bench

# The parser fuzzers (libFuzzer, clang-16; docs/fuzzing.md): built into $(FUZZ_DIR), each
# target run FUZZ_SECONDS seconds on its seed corpus; fails when any finds a crash.
FUZZ_DIR ?= build-fuzz
FUZZ_SECONDS ?= 30
fuzz:
	@$(MAKE) --no-print-directory deps
	cmake -S . -B $(FUZZ_DIR) -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
	  -DCMAKE_CXX_COMPILER=clang++-16 -DDARKNIGHT_FUZZ=ON -DDARKNIGHT_SANITIZE=address,undefined \
	  -DDARKNIGHT_BUILD_TESTS=OFF -DDARKNIGHT_BUILD_BENCH=OFF -DDARKNIGHT_CUDA=off
	cmake --build $(FUZZ_DIR) -j $(JOBS) --target fuzz_targets
	fuzz/run.sh $(FUZZ_DIR) $(FUZZ_SECONDS)

# The long checks (about two hours on 2 cores; as root): `make test` in a clean Debian 12
# root (scripts/clean-root-test.sh), each fuzzer for 10 minutes, 20 kill -9 / --resume rounds.
check-long:
	scripts/clean-root-test.sh
	@$(MAKE) --no-print-directory fuzz FUZZ_SECONDS=600
	@$(MAKE) --no-print-directory build
	KILL_RESUME_ROUNDS=20 tests/kill_resume_test.sh $(BUILD_DIR)

conformance: build
	$(BUILD_DIR)/darknight conformance --backend ref cpu --precision f32
	$(BUILD_DIR)/darknight conformance --backend ref cpu --precision f64

format:
	clang-format -i $$(git ls-files '*.h' '*.cpp')

clean:
	rm -rf $(BUILD_DIR) $(ASAN_DIR) $(FUZZ_DIR)
