#!/bin/bash
# Prints the archive entries of a test root for Debian release SUITE, one `deb URI SUITE COMPONENTS`
# line each (what mmdebstrap takes), derived from the HOST's apt configuration so that no archive
# URL lives in the repository: the test roots use whatever mirror (or proxy, or local copy) the
# machine itself uses.
#
#   apt-sources.sh SUITE          (bookworm, trixie...)
#
# Read: $APT_DIR/sources.list and $APT_DIR/sources.list.d/*.list (one-line format) and
# $APT_DIR/sources.list.d/*.sources (deb822); other file names are ignored as apt ignores them
# (e.g. foo.list.disabled), and so are comments, deb-src entries and deb822 stanzas with
# `Enabled: no`. APT_DIR is $DKMS_TRIGGER_TEST_APT_DIR, default /etc/apt (a test points it
# elsewhere).
#
# Which entries count: those of the host's own release, i.e. whose suite is CODENAME,
# CODENAME-updates or CODENAME-security (CODENAME/updates for old security layouts), with CODENAME
# the host's VERSION_CODENAME ($DKMS_TRIGGER_TEST_HOST_CODENAME overrides it). Third-party
# repositories and backports are left out. Each is re-targeted at SUITE (bookworm-updates ->
# trixie-updates): the Debian archive layout is the same for every release. Exits 1 with a message
# naming the files read when no entry for the release itself (CODENAME) is usable.
set -euo pipefail
suite=${1:?usage: apt-sources.sh SUITE}
apt_dir=${DKMS_TRIGGER_TEST_APT_DIR:-/etc/apt}
codename=${DKMS_TRIGGER_TEST_HOST_CODENAME:-$(. /etc/os-release 2>/dev/null && echo "${VERSION_CODENAME:-}")}
die() { echo "apt-sources: error: $*" >&2; exit 1; }
[[ -n $codename ]] || die "cannot tell the host's release (no VERSION_CODENAME in /etc/os-release)"

files=()
[[ -f $apt_dir/sources.list ]] && files+=("$apt_dir/sources.list")
for f in "$apt_dir"/sources.list.d/*.list "$apt_dir"/sources.list.d/*.sources; do
    [[ -f $f ]] && files+=("$f")
done

# Every enabled binary entry as "URI SUITE COMPONENTS...", one a line.
entries() {
    local f
    for f in "${files[@]}"; do
        case "$f" in
        *.sources)
            # deb822: blank-line separated stanzas; field names are case-insensitive; a value may
            # continue on indented lines (only URIs/Suites/Components matter here).
            awk '
                function flush() {
                    if (types ~ /(^| )deb( |$)/ && tolower(enabled) != "no" && uris != "" && suites != "") {
                        n = split(uris, u, " "); m = split(suites, s, " ")
                        for (i = 1; i <= n; i++) for (j = 1; j <= m; j++) print u[i], s[j], comps
                    }
                    types = uris = suites = comps = field = ""; enabled = "yes"
                }
                BEGIN { enabled = "yes" }
                /^#/ { next }
                /^[ \t]*$/ { flush(); next }
                /^[ \t]/ { v = $0; sub(/^[ \t]+/, "", v);
                           if (field == "uris") uris = uris " " v; else if (field == "suites") suites = suites " " v
                           else if (field == "components") comps = comps " " v; next }
                {
                    field = tolower($0); sub(/:.*/, "", field)
                    v = $0; sub(/^[^:]*:[ \t]*/, "", v)
                    if (field == "types") types = v; else if (field == "uris") uris = v
                    else if (field == "suites") suites = v; else if (field == "components") comps = v
                    else if (field == "enabled") enabled = v
                }
                END { flush() }' "$f"
            ;;
        *)
            # One-line: deb [options] URI SUITE COMPONENTS...
            sed -e 's/#.*//' -e 's/\[[^]]*\]//' "$f" | awk '$1 == "deb" && NF >= 3 { $1 = ""; sub(/^ /, ""); print }'
            ;;
        esac
    done
}

out=$(entries | while read -r uri s comps; do
    case "$s" in
    "$codename") echo "deb $uri $suite ${comps:-main}" ;;
    "$codename-updates") echo "deb $uri $suite-updates ${comps:-main}" ;;
    "$codename-security" | "$codename/updates") echo "deb $uri $suite-security ${comps:-main}" ;;
    esac
done | awk '!seen[$0]++')

grep -q "^deb [^ ]* $suite " <<<"$out" ||
    die "no enabled 'deb' entry for $codename (the host's release) in ${files[*]:-$apt_dir/sources.list(.d): no files}; the test roots take their archive from there"
echo "$out"
