# dkms.conf evaluator run by src/dkmsconf.rs: sources each conf the way dkms's read_conf and
# safe_source do, then writes what dkms would hold to fd 3 as NUL-terminated records. The input
# layout and the records are described in src/dkmsconf/batch.rs. Every name of ours starts with
# __dt_, so that the kernel-independence scan can refuse a conf that reads them.

exec 3>&1 >/dev/null
# dkms runs with extglob on, and it changes what parses.
shopt -s extglob
umask 022
PATH="$PATH:/usr/lib/dkms"

mapfile -t -d '' __dt_in
exec </dev/null
__dt_p=0
__dt_take() { __dt_v=${__dt_in[__dt_p++]}; }

__dt_take; __dt_vars=$__dt_v
__dt_take; __dt_crstrip=$__dt_v
__dt_take; __dt_conf_exclude=$__dt_v
__dt_take; __dt_tmp=$__dt_v/safe_source.$$
__dt_take; __dt_osr=$__dt_v
__dt_take; current_kernel=$__dt_v
__dt_take; parallel_jobs=$__dt_v
__dt_take; dkms_tree=$__dt_v
__dt_take; source_tree=$__dt_v
__dt_take; install_tree=$__dt_v
current_os=Linux
# dkms's distro_version(), minus its LSB fallback.
if [[ $__dt_osr && -r $__dt_osr ]]; then
    running_distribution=$(
        . "$__dt_osr"
        if [[ "$ID" = "ubuntu" ]]; then
            echo $ID
        elif [[ ${#ID_LIKE[@]} != 0 ]]; then
            echo ${ID_LIKE[0]}
        else
            echo $ID
        fi
    )
else
    running_distribution=unknown
fi

__dt_take; __dt_nk=$__dt_v
__dt_kv=() __dt_ka=() __dt_ksd=() __dt_kcf=()
for ((__dt_i = 0; __dt_i < __dt_nk; __dt_i++)); do
    __dt_kv+=("${__dt_in[__dt_p++]}")
    __dt_ka+=("${__dt_in[__dt_p++]}")
    __dt_ksd+=("${__dt_in[__dt_p++]}")
    __dt_kcf+=("${__dt_in[__dt_p++]}")
done

# The kernel variables read_conf sets before sourcing.
__dt_kernel() {
    kernelver=${__dt_kv[$1]}
    arch=${__dt_ka[$1]}
    kernel_source_dir=${__dt_ksd[$1]}
    kernel_config=${__dt_kcf[$1]}
}

# dkms's safe_source prints the variables it carries with, per variable,
#   for _i in $(eval echo \${!$_export_env[@]}); do
#       eval echo '$_export_env[$_i]=\"${'$_export_env'[$_i]}\"'     (dkms >= 3.1.5: ...[$_i]%$CR}...)
# Here the same loops are written out once for the whole list: the words expand exactly as
# dkms's do (unquoted, so blanks collapse and globs apply), without two evals per variable.
__dt_body=
for __dt_n in $__dt_vars; do
    __dt_body+="for _i in \${!$__dt_n[@]}; do echo $__dt_n[\$_i]=\\\"\${$__dt_n[\$_i]${__dt_crstrip:+%\$CR}}\\\"; done"$'\n'
done
eval "__dt_export() {
$__dt_body}"

# dkms's safe_source, with the positional parameters it gives the conf (the carried variables'
# names) but not its readonly copy of them, which only its own loop used. The round trip through `echo NAME[i]="value"` and sourcing that back is
# dkms's own and is kept on purpose: it collapses whitespace, re-expands `$`, and a stray `"`
# loses every later variable, so the values read back are the ones dkms ends up with. Neither
# the conf nor that re-read (which runs code when a value holds a stray `"`) gets fd 3. __dt_st
# gets the status of `.`.
__dt_source() {
    local to_source_file="$1"; shift
    [[ $__dt_crstrip ]] && local -r CR=$'\r'
    (
        exec 3>&- >"$__dt_tmp"
        . "$to_source_file" >/dev/null
        __dt_st=$?
        __dt_export
        # dkms greps `set` for these on every file; only a DKMS_DIRECTIVE* variable can match.
        if [[ ${!DKMS_DIRECTIVE*} ]]; then
            for directive in $(set | grep ^DKMS_DIRECTIVE | cut -d = -f 2-3); do
                directive_name=${directive%%=*}
                directive_value=${directive#*=}
                echo "$directive_name=\"$directive_value\""
            done
        fi
        exit $__dt_st
    )
    __dt_st=$?
    . "$__dt_tmp" 3>&-
}

# Whether a file whose sourcing returned 2 has a syntax error (the message in __dt_v): 2 is also
# what any conf whose last command fails with 2 returns, so bash -n decides, once per file.
declare -A __dt_syntax_of
__dt_syntax() {
    if [[ -z ${__dt_syntax_of[$1]+set} ]]; then
        __dt_syntax_of[$1]=
        __dt_v=$("$BASH" -O extglob -n "$1" 2>&1) ||
            __dt_syntax_of[$1]="syntax error: ${__dt_v%%$'\n'*}"
    fi
    __dt_v=${__dt_syntax_of[$1]}
    [[ $__dt_v ]]
}

# The sourcing half of read_conf, over the files given; fails with the reason in __dt_v when one
# of them does not parse.
__dt_read() {
    local __dt_f
    for __dt_f; do
        __dt_source "$__dt_f" $__dt_vars
        ((__dt_st == 2)) && __dt_syntax "$__dt_f" && return 1
    done
    return 0
}

# __dt_values appends, for what the planner reads, k<NAME>, z<element 0> when that is set (it is
# what dkms reads as $NAME) and one v<value> per element in index order.
__dt_body=
for __dt_n in PACKAGE_NAME PACKAGE_VERSION AUTOINSTALL BUILD_DEPENDS BUILD_EXCLUSIVE_KERNEL \
    BUILD_EXCLUSIVE_ARCH BUILD_EXCLUSIVE_CONFIG BUILD_EXCLUSIVE_KERNEL_MIN \
    BUILD_EXCLUSIVE_KERNEL_MAX OBSOLETE_BY BUILT_MODULE_NAME DEST_MODULE_LOCATION NO_WEAK_MODULES; do
    __dt_body+="__dt_out+=(k$__dt_n \${$__dt_n[0]+\"z\${$__dt_n[0]}\"} \"\${$__dt_n[@]/#/v}\")"$'\n'
done
eval "__dt_values() {
$__dt_body}"

# dkms's VER() without its sed: every run of one or two digits padded to three, spaces dropped.
# Glob patterns, not =~, which would compile a regex on every use.
__dt_ver() {
    local __dt_s=$1 __dt_d
    __dt_v=
    while [[ $__dt_s ]]; do
        __dt_d=${__dt_s%%[0-9]*}
        __dt_v+=$__dt_d
        __dt_s=${__dt_s:${#__dt_d}}
        __dt_d=${__dt_s%%[^0-9]*}
        __dt_s=${__dt_s:${#__dt_d}}
        case ${#__dt_d} in
            1) __dt_d=00$__dt_d ;;
            2) __dt_d=0$__dt_d ;;
        esac
        __dt_v+=$__dt_d
    done
    __dt_v=${__dt_v// /}
}

# read_conf's "Set build_exclude" tests (BUILD_EXCLUSIVE_CONFIG is left to the caller), one
# x<reason> token per failed test. OBSOLETE_BY stands in for an unset KERNEL_MAX, as in dkms 3.1.8.
__dt_exclusion() {
    # Most confs have no such directive: nothing to test.
    [[ $BUILD_EXCLUSIVE_KERNEL$BUILD_EXCLUSIVE_KERNEL_MIN$BUILD_EXCLUSIVE_KERNEL_MAX$OBSOLETE_BY\
$BUILD_EXCLUSIVE_ARCH${__dt_conf_exclude:+$build_exclude} ]] || return 0
    local __dt_max=$BUILD_EXCLUSIVE_KERNEL_MAX __dt_what=BUILD_EXCLUSIVE_KERNEL_MAX __dt_k
    [[ $OBSOLETE_BY && ! $__dt_max ]] && __dt_max=$OBSOLETE_BY __dt_what=OBSOLETE_BY
    [[ $BUILD_EXCLUSIVE_KERNEL && ! $kernelver =~ $BUILD_EXCLUSIVE_KERNEL ]] &&
        __dt_out+=("xBUILD_EXCLUSIVE_KERNEL '$BUILD_EXCLUSIVE_KERNEL' does not match $kernelver")
    if [[ $BUILD_EXCLUSIVE_KERNEL_MIN || $__dt_max ]]; then
        __dt_ver "$kernelver"
        __dt_k=$__dt_v
    fi
    if [[ $BUILD_EXCLUSIVE_KERNEL_MIN ]]; then
        __dt_ver "$BUILD_EXCLUSIVE_KERNEL_MIN"
        [[ $__dt_k < $__dt_v ]] &&
            __dt_out+=("xBUILD_EXCLUSIVE_KERNEL_MIN '$BUILD_EXCLUSIVE_KERNEL_MIN' is above $kernelver")
    fi
    if [[ $__dt_max ]]; then
        __dt_ver "$__dt_max"
        [[ $__dt_k > $__dt_v ]] && __dt_out+=("x$__dt_what '$__dt_max' is below $kernelver")
    fi
    [[ $BUILD_EXCLUSIVE_ARCH && ! $arch =~ $BUILD_EXCLUSIVE_ARCH ]] &&
        __dt_out+=("xBUILD_EXCLUSIVE_ARCH '$BUILD_EXCLUSIVE_ARCH' does not match $arch")
    [[ $__dt_conf_exclude && $build_exclude ]] &&
        __dt_out+=("xdkms.conf sets build_exclude='$build_exclude'")
    return 0
}

# Writes the records in __dt_out (each already ended by `e`).
__dt_emit() { printf '%s\0' "${__dt_out[@]}" >&3; }

# read_conf's clearing of the variables, plus the two __dt_exclusion reads that dkms 3.0.10 does
# not carry (so that nothing run by an earlier conf can leave them behind).
__dt_clear() { unset $__dt_vars BUILD_EXCLUSIVE_KERNEL_MIN BUILD_EXCLUSIVE_KERNEL_MAX; }

# The base files (dkms.conf, M.conf, M-V.conf) cannot see the kernel: source them once, then per
# context only its own M-V-K*.conf files, in a subshell that keeps the base state for the next.
# The contexts without such files run no conf code, so their records go out together.
__dt_independent() {
    __dt_kernel "${__dt_ck[0]}"
    __dt_clear
    if ! __dt_read "${__dt_base[@]}"; then
        printf 'F%s\0e\0' "$__dt_v" >&3
        return
    fi
    __dt_out=(b)
    __dt_values
    __dt_out+=(e)
    for ((__dt_c = 0; __dt_c < __dt_nc; __dt_c++)); do
        __dt_kernel "${__dt_ck[__dt_c]}"
        if ((__dt_cn[__dt_c])); then
            __dt_emit
            __dt_out=("r${__dt_cid[__dt_c]}")
            (
                if __dt_read "${__dt_files[@]:__dt_cf[__dt_c]:__dt_cn[__dt_c]}"; then
                    __dt_values
                    __dt_exclusion
                else
                    __dt_out+=("f$__dt_v")
                fi
                __dt_out+=(e)
                __dt_emit
            )
            __dt_out=()
        else
            __dt_out+=("r${__dt_cid[__dt_c]}" s)
            __dt_exclusion
            __dt_out+=(e)
        fi
    done
    __dt_emit
}

# read_conf in full for every context, each record out as soon as it is known.
__dt_dependent() {
    for ((__dt_c = 0; __dt_c < __dt_nc; __dt_c++)); do
        __dt_kernel "${__dt_ck[__dt_c]}"
        __dt_out=("r${__dt_cid[__dt_c]}")
        __dt_clear
        if ! __dt_read "${__dt_base[@]}"; then
            printf 'F%s\0e\0' "$__dt_v" >&3
            return
        fi
        if ((__dt_cn[__dt_c] == 0)) || __dt_read "${__dt_files[@]:__dt_cf[__dt_c]:__dt_cn[__dt_c]}"; then
            __dt_values
            __dt_exclusion
        else
            __dt_out+=("f$__dt_v")
        fi
        __dt_out+=(e)
        __dt_emit
    done
}

while ((__dt_p < ${#__dt_in[@]})); do
    __dt_take; __dt_job=$__dt_v
    __dt_take; module=$__dt_v
    __dt_take; module_version=$__dt_v
    __dt_take; __dt_indep=$__dt_v
    # Bash arrays are lists: only sequential reads of __dt_in are cheap, so no slices of it, and
    # the per-context numbers come as one space-separated token each.
    __dt_take; __dt_n=$__dt_v
    __dt_base=()
    for ((__dt_i = 0; __dt_i < __dt_n; __dt_i++)); do
        __dt_take; __dt_base+=("$__dt_v")
    done
    __dt_take; __dt_cid=($__dt_v)
    __dt_take; __dt_ck=($__dt_v)
    __dt_take; __dt_cn=($__dt_v)
    __dt_take; __dt_cf=($__dt_v)
    __dt_nc=${#__dt_cid[@]}
    __dt_take; __dt_n=$__dt_v
    __dt_files=()
    for ((__dt_i = 0; __dt_i < __dt_n; __dt_i++)); do
        __dt_take; __dt_files+=("$__dt_v")
    done
    printf 'm%s\0e\0' "$__dt_job" >&3
    if [[ $__dt_indep ]]; then
        __dt_independent
    else
        __dt_dependent
    fi
done
