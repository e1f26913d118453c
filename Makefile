# Front door, as in redis: `make` builds, `make test` runs every test.
# Plain GNU make; sources are picked up by directory, so a new file in
# src/lib, src/server, src/cli or mock/ needs no edit here.

PREFIX  ?= /usr/local
BUILD   ?= build
SAN     ?=
CC      ?= cc
VERSION := 0.1.0
SOVER   := 1

# Flags of the Debian packages come from pkg-config, and pkg-config (like
# the -dev packages) may only exist once scripts/install-deps.sh has run.
# Reading them when the Makefile is parsed, as this file once did, gave an
# empty result on a fresh machine: the first `make run` linked with `-lm`
# alone and left a libzjuchat.so.1 without NEEDED entries that was never
# relinked. So they live in a generated file, $(PKG_FLAGS_MK), whose rule
# depends on the phony `deps`: GNU make brings an included makefile up to
# date (here: installs what is missing, then asks pkg-config) before it
# builds anything, and re-reads this Makefile if the file changed. The rule
# replaces the file only when the flags differ, so the usual run costs one
# quick install-deps check and no restart; every object and link depends on
# it, so outputs built with other (or no) flags are rebuilt.
PKGS    := libcurl libevent jansson yajl
# Only the server links hiredis (limits_redis.c), not the library.
SERVER_PKGS := hiredis
PKG_FLAGS_MK := $(BUILD)/pkg-flags.mk
# Goals that compile nothing in this make (they need no packages, or they
# depend on `deps` and recurse) leave the file alone.
NO_FLAGS_GOALS := clean deps test-deps format format-check uninstall fresh-check test unit e2e asan fuzz web
ifneq ($(filter-out $(NO_FLAGS_GOALS),$(or $(MAKECMDGOALS),all)),)
include $(PKG_FLAGS_MK)
endif

CFLAGS_BASE := -std=c11 -D_GNU_SOURCE -DZJU_CHAT_VERSION=\"$(VERSION)\" -Wall -Wextra -Werror -Wshadow \
               -Wno-unused-parameter -fPIC -Iinclude -Isrc/lib $(PKG_CFLAGS)
ifeq ($(SAN),1)
  OPT := -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=undefined
else
  OPT := -O2 -g
endif
CFLAGS  ?=
CFLAGS  += $(CFLAGS_BASE) $(OPT)
LDLIBS  := $(PKG_LIBS) -lm
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

# The chat page (web/, README "The chat page"): web/dist is built from
# web/src by `make web` (Node.js, the pinned npm packages of web/) and
# committed, so that building the server needs no Node.js. Its files go
# into the binary through a C source that web/embed.c writes (no xxd);
# tests/node/web-dist.test.mjs fails when dist differs from a fresh build.
WEB_DIST := $(sort $(shell find web/dist -type f 2>/dev/null))
WEB_GEN  := $(BUILD)/gen/web_files.c
WEB_OBJ  := $(BUILD)/obj/web_files.o

STATIC  := $(BUILD)/libzjuchat.a
SHARED  := $(BUILD)/libzjuchat.so.$(SOVER)
PROGS   := $(BUILD)/zju-chat $(BUILD)/zju-chat-server $(BUILD)/zju-mock-upstream
MAN_PAGES := $(wildcard man/*.[1-8])
# man/NAME.S goes to share/man/manS/NAME.S
MAN_DEST  := $(foreach p,$(MAN_PAGES),$(DESTDIR)$(PREFIX)/share/man/man$(subst .,,$(suffix $(p)))/$(notdir $(p)))
ifneq ($(BENCH_SRC),)
PROGS   += $(BUILD)/zju-loadgen
endif

.PHONY: all deps test-deps test unit e2e format format-check run bench fuzz soak install uninstall clean asan \
        fresh-check web

all: $(STATIC) $(SHARED) $(PROGS)

$(PKG_FLAGS_MK): deps
	@mkdir -p $(dir $@)
	@cflags=$$(pkg-config --cflags $(PKGS)) && libs=$$(pkg-config --libs $(PKGS)) && \
	  redis=$$(pkg-config --libs $(SERVER_PKGS)) && \
	  printf 'PKG_CFLAGS := %s\nPKG_LIBS := %s\nSERVER_PKG_LIBS := %s\n' \
	    "$$cflags" "$$libs" "$$redis" > $@.new
	@if cmp -s $@.new $@; then rm -f $@.new; else mv -f $@.new $@; fi

# What the link steps read of their prerequisites (not the flags file).
INPUTS = $(filter %.o %.a,$^)

$(BUILD)/obj/%.o: %.c $(PKG_FLAGS_MK)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -MMD -MP -c $< -o $@

$(STATIC): $(LIB_OBJ)
	@mkdir -p $(dir $@)
	rm -f $@ && ar rcs $@ $^

# -z defs: a symbol no listed library defines fails the link, so the library
# cannot come out without the NEEDED entries of its dependencies.
$(SHARED): $(LIB_OBJ) $(PKG_FLAGS_MK)
	$(CC) -shared -Wl,-soname,libzjuchat.so.$(SOVER) -Wl,-z,defs $(LDFLAGS) -o $@ $(INPUTS) $(LDLIBS)
	ln -sf libzjuchat.so.$(SOVER) $(BUILD)/libzjuchat.so

$(BUILD)/zju-chat: $(CLI_OBJ) $(STATIC) $(PKG_FLAGS_MK)
	$(CC) $(LDFLAGS) -o $@ $(INPUTS) $(LDLIBS) -ledit

# -lcrypto: the access tokens' SHA-256 (tokens.c); OpenSSL's libcrypto is
# there already, under libcurl (libssl-dev, like the mock's TLS).
$(BUILD)/zju-chat-server: $(SERVER_OBJ) $(WEB_OBJ) $(STATIC) $(PKG_FLAGS_MK)
	$(CC) $(LDFLAGS) -o $@ $(INPUTS) $(LDLIBS) $(SERVER_PKG_LIBS) -lhttp_parser -lcrypto

# The chat page's files in the binary (WEB_* above).
$(BUILD)/web-embed: web/embed.c
	@mkdir -p $(dir $@)
	$(CC) -O2 -Wall -Wextra -Werror -o $@ $<

$(WEB_GEN): $(BUILD)/web-embed $(WEB_DIST)
	@mkdir -p $(dir $@)
	$(BUILD)/web-embed $@.tmp web/dist $(WEB_DIST) && mv -f $@.tmp $@

$(WEB_OBJ): $(WEB_GEN) src/server/static.h $(PKG_FLAGS_MK)
	$(CC) $(CFLAGS) -Isrc/server -c $< -o $@

web: test-deps
	node web/build.mjs

$(BUILD)/zju-mock-upstream: $(MOCK_OBJ) $(PKG_FLAGS_MK)
	$(CC) $(LDFLAGS) -o $@ $(INPUTS) $(LDLIBS) -levent_openssl -lssl -lcrypto

$(BUILD)/zju-loadgen: $(BENCH_SRC:%.c=$(BUILD)/obj/%.o) $(PKG_FLAGS_MK)
	$(CC) $(LDFLAGS) -o $@ $(INPUTS) $(LDLIBS)

# -MMD: some tests #include a server .c file (test_limits: ratelimit.c,
# shm.c); the dependency file makes an edit there rebuild the test.
$(BUILD)/tests/%: tests/unit/%.c $(STATIC) $(PKG_FLAGS_MK)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -MMD -MP -o $@ $< $(STATIC) $(LDFLAGS) $(LDLIBS) $(UNIT_LIBS) -lcmocka

# test_tokens #includes src/server/tokens.c
$(BUILD)/tests/test_tokens: UNIT_LIBS := -lcrypto
# test_limits_redis #includes limits_redis_lua.c and talks to a redis-server
$(BUILD)/tests/test_limits_redis: UNIT_LIBS := $(SERVER_PKG_LIBS)

# Sanitizer build used by the test suite.
asan:
	$(MAKE) BUILD=build-asan SAN=1 all $(UNIT_BIN:$(BUILD)/%=build-asan/%)

deps:
	bash scripts/install-deps.sh

# What the tests need beyond the build: Node.js and tests/node's npm packages.
test-deps:
	bash scripts/install-deps.sh --tests

# The README's test command: installs what is missing, builds with ASan and
# UBSan, runs unit tests, end-to-end tests and the format check, and ends
# with one summary line "N passed, N failed".
test: test-deps
	bash scripts/test.sh

unit: deps
	$(MAKE) asan
	bash scripts/test.sh unit

e2e: test-deps
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

# Library, header, pkg-config file, the commands (the mock too: frontend
# developers run it offline) and the man pages of man/. A real install
# (no DESTDIR staging) then runs ldconfig: programs linked with -lzjuchat
# find a library in /usr/local/lib only through the loader's cache.
install: all
	install -d $(DESTDIR)$(PREFIX)/lib $(DESTDIR)$(PREFIX)/include $(DESTDIR)$(PREFIX)/bin \
	  $(DESTDIR)$(PREFIX)/lib/pkgconfig $(sort $(dir $(MAN_DEST)))
	install -m 644 $(STATIC) $(DESTDIR)$(PREFIX)/lib/
	install -m 755 $(SHARED) $(DESTDIR)$(PREFIX)/lib/
	ln -sf libzjuchat.so.$(SOVER) $(DESTDIR)$(PREFIX)/lib/libzjuchat.so
	install -m 644 include/zjuchat.h $(DESTDIR)$(PREFIX)/include/
	install -m 755 $(BUILD)/zju-chat $(BUILD)/zju-chat-server $(BUILD)/zju-mock-upstream \
	  $(DESTDIR)$(PREFIX)/bin/
	sed -e 's|@PREFIX@|$(PREFIX)|g' -e 's|@VERSION@|$(VERSION)|g' libzjuchat.pc.in \
	  > $(DESTDIR)$(PREFIX)/lib/pkgconfig/libzjuchat.pc
	$(foreach p,$(MAN_PAGES),install -m 644 $(p) $(filter %/$(notdir $(p)),$(MAN_DEST)) &&) true
	$(LDCONFIG)

uninstall:
	rm -f $(DESTDIR)$(PREFIX)/lib/libzjuchat.* $(DESTDIR)$(PREFIX)/include/zjuchat.h \
	  $(DESTDIR)$(PREFIX)/bin/zju-chat $(DESTDIR)$(PREFIX)/bin/zju-chat-server \
	  $(DESTDIR)$(PREFIX)/bin/zju-mock-upstream \
	  $(DESTDIR)$(PREFIX)/lib/pkgconfig/libzjuchat.pc $(MAN_DEST)
	$(LDCONFIG)

# Only as root (a user installing into a home prefix cannot, and needs not).
LDCONFIG = $(if $(DESTDIR),@true,@if [ "$$(id -u)" = 0 ]; then ldconfig; \
	   else echo "install: not root, ldconfig not run" >&2; fi)

# A clean Debian 12 root (debootstrap) runs the README's quick start:
# `make run` until it answers, then `make test` (needs root; see the script).
fresh-check:
	bash scripts/fresh-check.sh

clean:
	rm -rf build build-asan build-fuzz

-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)
