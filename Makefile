# dkms-trigger: build, test, benchmark and install. Every distribution's packaging (debian/,
# rpm/, arch/) calls `make install` (or its install-<distro> variant) with DESTDIR and PREFIX.

PREFIX ?= /usr
SBINDIR ?= $(PREFIX)/sbin
DOCDIR ?= $(PREFIX)/share/doc/dkms-trigger
SYSCONFDIR ?= /etc
DESTDIR ?=
CARGO ?= cargo
CARGO_FLAGS ?= --locked
BIN := target/release/dkms-trigger

.PHONY: all build check test deps bench demo install clean

all: build

build:
	$(CARGO) build --release $(CARGO_FLAGS)

# Installs what the tests need from the distribution's packages (dkms, a compiler, the two newest
# linux-headers ABIs...), then runs every test against the release binary.
check: deps
	$(CARGO) test --release $(CARGO_FLAGS) -- --test-threads=2

# Tests only, for when the dependencies are known to be present.
test:
	$(CARGO) test --release $(CARGO_FLAGS)

deps:
	tests/setup/install-deps.sh

bench:
	$(CARGO) bench $(CARGO_FLAGS)

# The try-it command: runs the tool's main job for real in a throwaway world (see README.md).
demo: build
	tests/demo.sh

install: build
	install -D -m 0755 $(BIN) $(DESTDIR)$(SBINDIR)/dkms-trigger
	install -d -m 0755 $(DESTDIR)$(SYSCONFDIR)/dkms-trigger/config.d
	install -D -m 0644 docs/config.md $(DESTDIR)$(DOCDIR)/config.md
	install -D -m 0644 README.md $(DESTDIR)$(DOCDIR)/README.md

clean:
	$(CARGO) clean
