# lmp -- build, test, benchmark. `make help` lists the targets.
#
#   make            build lmp/core.so and the runtime for $(LUA) (5.4 default)
#   make run        install what is missing, build, run the example pool job
#   make test       install, build for every Lua, run every suite
#   make LUA=5.1    (or LUA=luajit) build and test for one other Lua
#   make SANITIZE=1 build with ASan + UBSan into build/asan/$(LUA)
#   make test-asan  only the 5.4 specs against that build (SPEC=file: one)

LUA ?= 5.4
PREFIX ?= /usr/local
DESTDIR ?=
LUAS ?= 5.4 5.1 luajit

ifeq ($(LUA),luajit)
  LUA_INC := /usr/include/luajit-2.1
  LUA_LIB := -lluajit-5.1
  LUA_BIN := luajit
  LUA_ABI := 5.1
  LUA_DEFS := -DLMP_LUAJIT
else
  LUA_INC := /usr/include/lua$(LUA)
  LUA_LIB := -llua$(LUA)
  LUA_BIN := lua$(LUA)
  LUA_ABI := $(LUA)
  LUA_DEFS :=
endif

# Both on the default package.path / package.cpath of Debian's lua5.1,
# lua5.4 and luajit when PREFIX is /usr/local (the default).
LUADIR := $(PREFIX)/share/lua/$(LUA_ABI)
CMODDIR := $(PREFIX)/lib/lua/$(LUA_ABI)

# SANITIZE=1: the same build with AddressSanitizer and UndefinedBehavior-
# Sanitizer, in its own tree (build/asan/$(LUA)). UBSan findings abort
# (-fno-sanitize-recover). lmp/core.so links libasan dynamically, so a
# plain interpreter must preload it (spec/run_all.sh does: LD_PRELOAD).
SANITIZE ?=
ifeq ($(SANITIZE),1)
  BUILDROOT ?= build/asan
  SAN_FLAGS := -fsanitize=address,undefined -fno-omit-frame-pointer \
               -fno-sanitize-recover=undefined -DLMP_SANITIZE
endif
BUILDROOT ?= build
BUILD := $(BUILDROOT)/$(LUA)
# spec/c/ubsan_log.c: UBSan's reports into files (see there); linked into
# everything the sanitized build links, through LIBS.
ifeq ($(SANITIZE),1)
  SAN_OBJ := $(BUILD)/obj/spec/c/ubsan_log.o
endif

CC ?= cc
OPT ?= -O2 -g
WARN := -Wall -Wextra -Wshadow -Wmissing-prototypes -Werror
CFLAGS += -std=c99 $(OPT) $(WARN) -fPIC -fvisibility=hidden $(SAN_FLAGS) $(EXTRA_CFLAGS)
LMP_CPPFLAGS := -I$(LUA_INC) -Imodules -Icore $(LUA_DEFS) \
                -DLMP_LUADIR='"$(LUADIR)"'
LIBS := $(SAN_FLAGS) $(SAN_OBJ) -lhiredis -lsodium -lssl -lcrypto -lpthread -lm -lrt $(EXTRA_LIBS)

CORE_SRC := $(wildcard core/*.c)
MOD_SRC := $(filter-out modules/lmp_main.c,$(wildcard modules/*.c))
CORE_OBJ := $(patsubst %.c,$(BUILD)/obj/%.o,$(CORE_SRC))
MOD_OBJ := $(patsubst %.c,$(BUILD)/obj/%.o,$(MOD_SRC))
HEADERS := $(wildcard core/*.h modules/*.h)
CTEST_SRC := $(wildcard spec/c/test_*.c)
CTESTS := $(patsubst spec/c/%.c,$(BUILD)/ctest/%,$(CTEST_SRC))
# C tests of the embedding API (lmp.h): they link Lua and every module.
ETEST_SRC := $(wildcard spec/c/embed/test_*.c)
ETESTS := $(patsubst spec/c/embed/%.c,$(BUILD)/ctest/%,$(ETEST_SRC))

DEBIAN_PKGS := lua5.4 liblua5.4-dev lua5.1 liblua5.1-0-dev luajit \
  libluajit-5.1-dev lua-cjson lua-cjson-dev lua-busted redis-server \
  libhiredis-dev libsodium-dev luarocks valgrind pkg-config gcc make \
  neovim love libssl-dev prometheus openssl

.PHONY: all deps run test test-asan test-c test-lua bench check-mem install \
        clean examples help rockspec-check rock rock-install

all: $(BUILD)/lmp/core.so $(BUILD)/bin/lmp lmp-link $(CTESTS) $(ETESTS) examples

help:
	@sed -n '1,10p' Makefile

# Installs the Debian packages that are missing; apt-get update runs once,
# and only when something is missing.
deps:
	@missing=""; for p in $(DEBIAN_PKGS); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "ok installed" \
	    || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
	    apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

$(BUILD)/obj/%.o: %.c $(HEADERS)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(LMP_CPPFLAGS) -c $< -o $@

$(BUILD)/lmp/core.so: $(CORE_OBJ) $(MOD_OBJ) | $(SAN_OBJ)
	@mkdir -p $(dir $@)
	$(CC) -shared -o $@ $^ $(LIBS)

# The runtime: the same objects linked into an executable (exported so
# that C modules such as cjson.so resolve the Lua API against it).
$(BUILD)/bin/lmp: $(CORE_OBJ) $(MOD_OBJ) $(BUILD)/obj/modules/lmp_main.o | $(SAN_OBJ)
	@mkdir -p $(dir $@)
	$(CC) -o $@ $^ -Wl,-E $(LUA_LIB) $(LIBS) -ldl

# ./lmp is a copy, not a link, so that it finds ./lua next to itself.
lmp-link: $(BUILD)/bin/lmp
	@if [ "$(LUA)" = "5.4" ] && [ "$(BUILDROOT)" = build ]; then cp -f $(BUILD)/bin/lmp ./lmp; fi

$(BUILD)/ctest/%: spec/c/%.c $(CORE_OBJ) spec/c/ctest.h | $(SAN_OBJ)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -Icore -Ispec/c -o $@ $< $(CORE_OBJ) $(LIBS)

$(BUILD)/ctest/%: spec/c/embed/%.c $(CORE_OBJ) $(MOD_OBJ) $(HEADERS) spec/c/ctest.h | $(SAN_OBJ)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(LMP_CPPFLAGS) -Ispec/c -o $@ $< $(CORE_OBJ) $(MOD_OBJ) \
	  -Wl,-E $(LUA_LIB) $(LIBS) -ldl

# examples/embed/Makefile.inc links the objects into a C host.
examples: $(CORE_OBJ) $(MOD_OBJ) $(SAN_OBJ)
	@if [ -f examples/embed/Makefile.inc ]; then \
	  $(MAKE) --no-print-directory -f examples/embed/Makefile.inc \
	    LUA=$(LUA) BUILD=$(BUILD) LUA_INC=$(LUA_INC) LUA_LIB="$(LUA_LIB)" \
	    LIBS="$(LIBS)" CFLAGS="$(CFLAGS) $(LMP_CPPFLAGS)"; fi

run: deps all
	./lmp examples/pool_demo.lua

# The last pass runs the C tests and the 5.4 specs against the ASan + UBSan
# build (build/asan/5.4): see run_sanitized in spec/run_all.sh.
ASAN_BUILDROOT ?= build/asan

test: deps
	@for l in $(LUAS); do $(MAKE) --no-print-directory LUA=$$l all || exit 1; done
	@$(MAKE) --no-print-directory LUA=5.4 SANITIZE=1 BUILDROOT=$(ASAN_BUILDROOT) all
	@BUILDROOT=$(BUILDROOT) LUAS="$(LUAS)" ASAN_BUILDROOT=$(ASAN_BUILDROOT) bash spec/run_all.sh

# Only the sanitized pass (SPEC=spec/x_spec.lua for one file).
test-asan: deps
	@$(MAKE) --no-print-directory LUA=5.4 SANITIZE=1 BUILDROOT=$(ASAN_BUILDROOT) all
	@LUAS="" NO_CTEST=1 ASAN_BUILDROOT=$(ASAN_BUILDROOT) BUSTED_ARGS="$(SPEC)" bash spec/run_all.sh

test-c: all
	@BUILDROOT=$(BUILDROOT) LUAS="" bash spec/run_all.sh

test-lua: all
	@BUILDROOT=$(BUILDROOT) LUAS="$(LUA)" NO_CTEST=1 BUSTED_ARGS="$(SPEC)" bash spec/run_all.sh

bench: deps all
	@bash bench/run_all.sh

# Memory checks: the C tests under valgrind, then a Lua smoke test of
# every binding under valgrind (see spec/memcheck.sh).
check-mem: deps all
	@bash spec/memcheck.sh $(BUILD)

install: all
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(LUADIR)/lmp \
	  $(DESTDIR)$(CMODDIR)/lmp $(DESTDIR)$(PREFIX)/include
	install -m 755 $(BUILD)/bin/lmp $(DESTDIR)$(PREFIX)/bin/lmp
	install -m 644 lua/lmp.lua $(DESTDIR)$(LUADIR)/lmp.lua
	for f in lua/lmp/*.lua; do [ ! -f "$$f" ] || install -m 644 "$$f" $(DESTDIR)$(LUADIR)/lmp/; done
	install -m 755 $(BUILD)/lmp/core.so $(DESTDIR)$(CMODDIR)/lmp/core.so
	install -m 644 modules/lmp.h $(DESTDIR)$(PREFIX)/include/lmp.h

# luarocks (lmp-scm-1.rockspec, build type "make") calls these two with
# LUA_INCDIR, INST_LIBDIR and INST_LUADIR set.
ROCK_LUA = $(if $(findstring luajit,$(LUA_INCDIR)),luajit,$(patsubst lua%,%,$(notdir $(LUA_INCDIR))))
rock:
	$(MAKE) BUILDROOT=build/rock LUA=$(ROCK_LUA) LUA_INC=$(LUA_INCDIR) \
	  OPT=-O2 build/rock/$(ROCK_LUA)/lmp/core.so

rock-install:
	install -d $(INST_LIBDIR)/lmp $(INST_LUADIR)/lmp
	install -m 755 build/rock/$(ROCK_LUA)/lmp/core.so $(INST_LIBDIR)/lmp/core.so
	install -m 644 lua/lmp.lua $(INST_LUADIR)/lmp.lua
	for f in lua/lmp/*.lua; do [ ! -f "$$f" ] || install -m 644 "$$f" $(INST_LUADIR)/lmp/; done

# Builds and installs the rock into build/rocks with the local luarocks,
# then loads it from plain Lua (no registry is needed or reached).
rockspec-check: deps
	@bash spec/rockspec_check.sh $(LUA_ABI) $(LUA_BIN)

clean:
	rm -rf build lmp
