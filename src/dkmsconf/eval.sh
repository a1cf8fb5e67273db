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
# Which of read_conf's refusals apply (see __dt_check): none of these for an unknown dkms.
__dt_take; __dt_records=$__dt_v
__dt_take; __dt_dest_required=$__dt_v
__dt_take; __dt_sparse=$__dt_v
__dt_take; __dt_lengths=$__dt_v
__dt_take; __dt_strict_autoinstall=$__dt_v
__dt_take; __dt_strict_yes_no=$__dt_v
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
# names) but not its readonly copy of them, which only its own loop used. The round trip through
# `echo NAME[i]="value"` and sourcing that back is dkms's own and is kept on purpose: it collapses
# whitespace, re-expands `$`, and a stray `"` loses every later variable, so the values read back
# are the ones dkms ends up with. Neither the conf nor that re-read (which runs code when a value
# holds a stray `"`) gets fd 3. As in dkms, nothing looks at how the sourcing ended: a syntax
# error, an unterminated quote or a failing command leaves what was assigned before it, and an
# `exit` leaves nothing from this file (the subshell ends before printing).
__dt_source() {
    local to_source_file="$1"; shift
    [[ $__dt_crstrip ]] && local -r CR=$'\r'
    (
        exec 3>&- >"$__dt_tmp"
        . "$to_source_file" >/dev/null
        __dt_export
        # dkms greps `set` for these on every file; only a DKMS_DIRECTIVE* variable can match.
        if [[ ${!DKMS_DIRECTIVE*} ]]; then
            for directive in $(set | grep ^DKMS_DIRECTIVE | cut -d = -f 2-3); do
                directive_name=${directive%%=*}
                directive_value=${directive#*=}
                echo "$directive_name=\"$directive_value\""
            done
        fi
    )
    . "$__dt_tmp" 3>&-
}

# The sourcing half of read_conf, over the files given.
__dt_read() {
    local __dt_f
    for __dt_f; do
        __dt_source "$__dt_f" $__dt_vars
    done
}

# The refusing half of read_conf, for the values just read: fails with the reasons in __dt_v
# (dkms's own words, after the module's dkms.conf path) when the installed dkms would refuse
# them. A missing PACKAGE_NAME or PACKAGE_VERSION, which every dkms refuses, is left to the
# caller, which says so more plainly. Uses only __dt_ names: the base values must stay as the
# conf left them for the per-kernel files sourced on top.
__dt_check() {
    [[ $__dt_records && $PACKAGE_NAME && $PACKAGE_VERSION ]] || return 0
    local __dt_nr=0 __dt_s __dt_i __dt_name __dt_why=()
    if [[ $__dt_sparse ]]; then
        # 3.2.2 and later: as many records as the highest index set in any of the four arrays.
        __dt_nr=-1
        for __dt_s in "${!BUILT_MODULE_NAME[@]}" "${!BUILT_MODULE_LOCATION[@]}" \
            "${!DEST_MODULE_NAME[@]}" "${!DEST_MODULE_LOCATION[@]}"; do
            ((__dt_s > __dt_nr)) && __dt_nr=$__dt_s
        done
        ((__dt_nr++))
    else
        # Before: as many as the largest number of elements.
        for __dt_s in ${#BUILT_MODULE_NAME[@]} ${#BUILT_MODULE_LOCATION[@]} \
            ${#DEST_MODULE_NAME[@]} ${#DEST_MODULE_LOCATION[@]}; do
            ((__dt_s > __dt_nr)) && __dt_nr=$__dt_s
        done
    fi
    for ((__dt_i = 0; __dt_i < __dt_nr; __dt_i++)); do
        # The name defaults to PACKAGE_NAME for a single record. 3.0.10 asks instead for a
        # single DEST_MODULE_LOCATION: the same verdict, since with two records and one location
        # or with no location at all a record lacks its location and is refused anyway.
        __dt_name=${BUILT_MODULE_NAME[__dt_i]}
        [[ ! $__dt_name ]] && ((__dt_nr == 1)) && __dt_name=$PACKAGE_NAME
        [[ $__dt_name ]] ||
            __dt_why+=("No 'BUILT_MODULE_NAME' directive specified for record #$__dt_i")
        case $__dt_name in
            *.o | *.ko) __dt_why+=("'BUILT_MODULE_NAME' directive ends in '.o' or '.ko' in record #$__dt_i") ;;
        esac
        case ${DEST_MODULE_NAME[__dt_i]:-$__dt_name} in
            *.o | *.ko) __dt_why+=("'DEST_MODULE_NAME' directive ends in '.o' or '.ko' in record #$__dt_i") ;;
        esac
        case ${DEST_MODULE_LOCATION[__dt_i]} in
            /kernel* | /updates* | /extra*) ;;
            "") __dt_why+=("No 'DEST_MODULE_LOCATION' directive specified for record #$__dt_i") ;;
            *) __dt_why+=("Directive 'DEST_MODULE_LOCATION' does not begin with '/kernel', '/updates', or '/extra' in record #$__dt_i") ;;
        esac
    done
    # 3.0.10 counts its own dest_module_location, which holds one element per record and
    # whatever the conf put there.
    [[ $__dt_dest_required ]] && ((__dt_nr == 0 && ${#dest_module_location[@]} == 0)) &&
        __dt_why+=("No 'DEST_MODULE_LOCATION' directive specified.")
    # 3.1.7 and later check that each of its own four arrays has one element per record: they
    # do unless the conf set an element beyond the last record.
    if [[ $__dt_lengths ]]; then
        for __dt_s in "${!built_module_name[@]}" "${!built_module_location[@]}" \
            "${!dest_module_name[@]}" "${!dest_module_location[@]}"; do
            if ((__dt_s >= __dt_nr)); then
                __dt_why+=("Module name/location array length mismatch.")
                break
            fi
        done
    fi
    if [[ $__dt_strict_autoinstall ]]; then
        case $AUTOINSTALL in
            "" | [Yy][Ee][Ss] | [Nn][Oo]) ;;
            *) __dt_why+=("Unsupported AUTOINSTALL value '$AUTOINSTALL'") ;;
        esac
    fi
    if [[ $__dt_strict_yes_no ]]; then
        case $BUILD_DEPENDS_REBUILD in
            "" | [Yy][Ee][Ss] | [Nn][Oo]) ;;
            *) __dt_why+=("Unsupported BUILD_DEPENDS_REBUILD value '$BUILD_DEPENDS_REBUILD'") ;;
        esac
        case $NO_WEAK_MODULES in
            "" | [Yy][Ee][Ss] | [Nn][Oo]) ;;
            *) __dt_why+=("Unsupported NO_WEAK_MODULES value '$NO_WEAK_MODULES'") ;;
        esac
    fi
    ((${#__dt_why[@]})) || return 0
    __dt_v="${__dt_base[0]}: ${__dt_why[0]}"
    for __dt_s in "${__dt_why[@]:1}"; do
        __dt_v+="; $__dt_s"
    done
    return 1
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
# The contexts without such files run no conf code, so their records go out together. Base values
# that dkms refuses fail the module: the generic context is one of those.
__dt_independent() {
    __dt_kernel "${__dt_ck[0]}"
    __dt_clear
    __dt_read "${__dt_base[@]}"
    if ! __dt_check; then
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
                __dt_read "${__dt_files[@]:__dt_cf[__dt_c]:__dt_cn[__dt_c]}"
                __dt_result
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

# The end of a context's record: its values and exclusions, or why dkms refuses them.
__dt_result() {
    if __dt_check; then
        __dt_values
        __dt_exclusion
    else
        __dt_out+=("f$__dt_v")
    fi
    __dt_out+=(e)
}

# read_conf in full for every context, each record out as soon as it is known.
__dt_dependent() {
    for ((__dt_c = 0; __dt_c < __dt_nc; __dt_c++)); do
        __dt_kernel "${__dt_ck[__dt_c]}"
        __dt_out=("r${__dt_cid[__dt_c]}")
        __dt_clear
        __dt_read "${__dt_base[@]}" "${__dt_files[@]:__dt_cf[__dt_c]:__dt_cn[__dt_c]}"
        __dt_result
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
