# catbird: build, install (PGXS), test and lint.
#
#   make build                      concatenate extension/sql/[0-9]*.sql into the
#                                   packaged python/catbird/sql/catbird--$(EXTVERSION).sql,
#                                   copy extension/history/ there, and write the update
#                                   script catbird--<from>--$(EXTVERSION).sql (tools/gen_upgrade.py)
#   make install [PG_CONFIG=...]    build, then copy control + SQL into
#                                   $(pg_config --sharedir)/extension
#   make test                       build, then run the test suite (embedded PG 18
#                                   unless CATBIRD_TEST_DSN is set)
#   make lint [LINT_DSN=...]        ruff, mypy, and plpgsql_check when LINT_DSN names
#                                   a server that has plpgsql_check and catbird installed
#   make pg-tle                     write pg_tle/catbird--$(EXTVERSION).pg_tle.sql and the
#                                   update paths pg_tle/catbird--<from>--$(EXTVERSION).pg_tle.sql
#   make pg-tle-check PG_DSN=...    run the pg_tle tests against a real server that has
#                                   pg_tle in shared_preload_libraries (superuser DSN;
#                                   the catbird files must not be on that server)

EXT_NAME    = catbird
EXTVERSION := $(shell sed -n "s/^default_version *= *'\(.*\)'.*/\1/p" extension/catbird.control)
# Not PYTHON: PGXS's Makefile.global assigns that to the Python PostgreSQL was built with.
PY         ?= python
PG_CONFIG  ?= pg_config
LINT_DSN   ?= $(CATBIRD_TEST_DSN)

SQL_SOURCES   := $(sort $(wildcard extension/sql/[0-9]*.sql))
BUILT_DIR     := python/catbird/sql
BUILT_SQL     := $(BUILT_DIR)/$(EXT_NAME)--$(EXTVERSION).sql
BUILT_CONTROL := $(BUILT_DIR)/$(EXT_NAME).control
# Released scripts, frozen: the install scripts of earlier versions (the
# starting points of upgrades, and what CREATE EXTENSION ... VERSION installs)
# and their update scripts. Shipped as they are.
HISTORY_SRC   := $(wildcard extension/history/$(EXT_NAME)--*.sql)
BUILT_HISTORY := $(patsubst extension/history/%,$(BUILT_DIR)/%,$(HISTORY_SRC))
# The update script into this version: extension/upgrades/<from>--<to>.sql
# (hand-written: tables, columns, types, indexes, dropped functions) followed
# by every function of the sources, written by tools/gen_upgrade.py. At a
# release, move the built catbird--<from>--<to>.sql and catbird--<to>.sql
# into extension/history/.
MIGRATIONS    := $(wildcard extension/upgrades/*--*.sql)
BUILT_UPGRADE := $(patsubst extension/upgrades/%,$(BUILT_DIR)/$(EXT_NAME)--%,$(MIGRATIONS))
PG_TLE_SQL    := pg_tle/$(EXT_NAME)--$(EXTVERSION).pg_tle.sql

# tests/test_install.py rebuilds this exact header to detect a stale build.
BUILT_HEADER := -- GENERATED FILE, do not edit: concatenation of extension/sql/[0-9]*.sql by 'make build'.

.DEFAULT_GOAL := build
.PHONY: build test lint pg-tle pg-tle-check

build: $(BUILT_SQL) $(BUILT_CONTROL) $(BUILT_HISTORY) $(BUILT_UPGRADE)

# The built SQL is committed, so it must be byte-for-byte reproducible: no
# timestamps, no paths, just the header line and the sources in filename order.
$(BUILT_SQL): $(SQL_SOURCES) extension/catbird.control Makefile
	@test -n "$(SQL_SOURCES)" || { echo "no extension/sql/[0-9]*.sql files" >&2; exit 1; }
	@mkdir -p $(BUILT_DIR)
	{ printf '%s\n' "$(BUILT_HEADER)"; cat $(SQL_SOURCES); } > $@.tmp
	mv $@.tmp $@

$(BUILT_CONTROL): extension/catbird.control
	@mkdir -p $(BUILT_DIR)
	cp $< $@

$(BUILT_HISTORY): $(BUILT_DIR)/%: extension/history/%
	@mkdir -p $(BUILT_DIR)
	cp $< $@

$(BUILT_UPGRADE): $(BUILT_DIR)/$(EXT_NAME)--%: extension/upgrades/% $(SQL_SOURCES) extension/catbird.control tools/gen_upgrade.py
	@mkdir -p $(BUILT_DIR)
	$(PY) tools/gen_upgrade.py $< --output $@

test: build
	$(PY) -m pytest -q

lint:
	ruff check .
	mypy
	@if [ -n "$(LINT_DSN)" ]; then \
		$(PY) tools/plpgsql_check.py --dsn '$(LINT_DSN)'; \
	else \
		echo "plpgsql_check not run: set LINT_DSN (or CATBIRD_TEST_DSN) to a superuser DSN of a server with plpgsql_check and 'make install' done"; \
	fi

pg-tle: $(PG_TLE_SQL)

pg-tle-check: build
	@test -n "$(PG_DSN)" || { echo "usage: make pg-tle-check PG_DSN=postgresql://..." >&2; exit 2; }
	PG_TLE_DSN='$(PG_DSN)' $(PY) -m pytest -q -rs tests/test_pg_tle_real.py

# Also writes pg_tle/catbird--<from>--$(EXTVERSION).pg_tle.sql, the update paths.
$(PG_TLE_SQL): $(BUILT_SQL) $(BUILT_CONTROL) $(BUILT_UPGRADE) pg_tle/generate.py python/catbird/db/pg_tle.py
	$(PY) pg_tle/generate.py

# PGXS does the installing so that DESTDIR, sharedir and install-sh behave as
# for any other extension. The control file goes through DATA because PGXS's
# EXTENSION variable expects it in the current directory. PGXS is only pulled
# in when pg_config answers, so that 'make build' works on machines without a
# PostgreSQL installation.
DATA      = $(BUILT_SQL) $(BUILT_CONTROL) $(BUILT_HISTORY) $(BUILT_UPGRADE)
MODULEDIR = extension
PGXS := $(shell $(PG_CONFIG) --pgxs 2>/dev/null)
ifneq ($(PGXS),)
include $(PGXS)
all: build
else
install:
	@echo "'$(PG_CONFIG)' not found: run 'make install PG_CONFIG=/path/to/pg_config'" >&2
	@exit 1
endif
