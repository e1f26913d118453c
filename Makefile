# Front door, as in redis: `make` builds, `make test` runs every test.
# Plain GNU make; sources are picked up by directory, so a new file in
# src/lib, src/server, src/cli or mock/ needs no edit here.

PREFIX  ?= /usr/local
BUILD   ?= build
SAN     ?=
CC      ?= cc
VERSION := 0.1.0
SOVER   := 1

PKGS    := libcurl libevent jansson yajl
CFLAGS_BASE := -std=c11 -D_GNU_SOURCE -DZJU_CHAT_VERSION=\"$(VERSION)\" -Wall -Wextra -Werror -Wshadow \
               -Wno-unused-parameter -fPIC -Iinclude -Isrc/lib \
               $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
ifeq ($(SAN),1)
  OPT := -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=undefined
else
  OPT := -O2 -g
endif
CFLAGS  ?=
CFLAGS  += $(CFLAGS_BASE) $(OPT)
LDLIBS  := $(shell pkg-config --libs $(PKGS) 2>/dev/null) -lm
LDFLAGS += $(if $(filter 1,$(SAN)),-fsanitize=address$(comma)undefined)
comma := ,

LIB_SRC    := $(wildcard src/lib/*.c)
CLI_SRC    := $(wildcard src/cli/*.c)
SERVER_SRC := $(wildcard src/server/*.c)
MOCK_SRC   := $(wildcard mock/*.c)
BENCH_SRC  := $(wildcard bench/*.c)
UNIT_SRC   := $(wildcard tests/unit/test_*.c)

LIB_OBJ    := $(LIB_SRC:%.c=$(BUILD)/obj/%.o)
CLI_OBJ    := $(CLI_SRC:%.c=$(BUILD)/obj/%.o)
SERVER_OBJ := $(SERVER_SRC:%.c=$(BUILD)/obj/%.o)
MOCK_OBJ   := $(MOCK_SRC:%.c=$(BUILD)/obj/%.o)
UNIT_BIN   := $(UNIT_SRC:tests/unit/%.c=$(BUILD)/tests/%)

STATIC  := $(BUILD)/libzjuchat.a
SHARED  := $(BUILD)/libzjuchat.so.$(SOVER)
PROGS   := $(BUILD)/zju-chat $(BUILD)/zju-chat-server $(BUILD)/zju-mock-upstream
ifneq ($(BENCH_SRC),)
PROGS   += $(BUILD)/zju-loadgen
endif

.PHONY: all deps test unit e2e format format-check run bench fuzz soak install uninstall clean asan

all: $(STATIC) $(SHARED) $(PROGS)

$(BUILD)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -MMD -MP -c $< -o $@

$(STATIC): $(LIB_OBJ)
	@mkdir -p $(dir $@)
	rm -f $@ && ar rcs $@ $^

$(SHARED): $(LIB_OBJ)
	$(CC) -shared -Wl,-soname,libzjuchat.so.$(SOVER) $(LDFLAGS) -o $@ $^ $(LDLIBS)
	ln -sf libzjuchat.so.$(SOVER) $(BUILD)/libzjuchat.so

$(BUILD)/zju-chat: $(CLI_OBJ) $(STATIC)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS) -ledit

$(BUILD)/zju-chat-server: $(SERVER_OBJ) $(STATIC)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/zju-mock-upstream: $(MOCK_OBJ)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS) -levent_openssl -lssl -lcrypto

$(BUILD)/zju-loadgen: $(BENCH_SRC:%.c=$(BUILD)/obj/%.o)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/tests/%: tests/unit/%.c $(STATIC)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -o $@ $< $(STATIC) $(LDFLAGS) $(LDLIBS) -lcmocka

# Sanitizer build used by the test suite.
asan:
	$(MAKE) BUILD=build-asan SAN=1 all $(UNIT_BIN:$(BUILD)/%=build-asan/%)

deps:
	bash scripts/install-deps.sh

# The README's test command: installs what is missing, builds with ASan and
# UBSan, runs unit tests, end-to-end tests and the format check, and ends
# with one summary line "N passed, N failed".
test: deps
	bash scripts/test.sh

unit: deps
	$(MAKE) asan
	bash scripts/test.sh unit

e2e: deps
	$(MAKE) asan
	bash scripts/test.sh e2e

format:
	clang-format -i $$(git ls-files '*.c' '*.h')

format-check:
	bash scripts/format-check.sh

run: deps all
	bash scripts/run.sh

bench: deps all
	bash bench/run.sh

fuzz: deps
	bash fuzz/run.sh $(FUZZ_SECONDS)

soak: deps all
	bash scripts/soak.sh

install: all
	install -d $(DESTDIR)$(PREFIX)/lib $(DESTDIR)$(PREFIX)/include $(DESTDIR)$(PREFIX)/bin \
	  $(DESTDIR)$(PREFIX)/lib/pkgconfig $(DESTDIR)$(PREFIX)/share/man/man1
	install -m 644 $(STATIC) $(DESTDIR)$(PREFIX)/lib/
	install -m 755 $(SHARED) $(DESTDIR)$(PREFIX)/lib/
	ln -sf libzjuchat.so.$(SOVER) $(DESTDIR)$(PREFIX)/lib/libzjuchat.so
	install -m 644 include/zjuchat.h $(DESTDIR)$(PREFIX)/include/
	install -m 755 $(BUILD)/zju-chat $(BUILD)/zju-chat-server $(DESTDIR)$(PREFIX)/bin/
	sed -e 's|@PREFIX@|$(PREFIX)|g' -e 's|@VERSION@|$(VERSION)|g' libzjuchat.pc.in \
	  > $(DESTDIR)$(PREFIX)/lib/pkgconfig/libzjuchat.pc
	install -m 644 man/*.1 $(DESTDIR)$(PREFIX)/share/man/man1/

uninstall:
	rm -f $(DESTDIR)$(PREFIX)/lib/libzjuchat.* $(DESTDIR)$(PREFIX)/include/zjuchat.h \
	  $(DESTDIR)$(PREFIX)/bin/zju-chat $(DESTDIR)$(PREFIX)/bin/zju-chat-server \
	  $(DESTDIR)$(PREFIX)/lib/pkgconfig/libzjuchat.pc $(DESTDIR)$(PREFIX)/share/man/man1/zju-chat*.1

clean:
	rm -rf build build-asan build-fuzz

-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)
