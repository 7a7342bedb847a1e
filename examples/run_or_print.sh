# Sourced by the serve/launch examples: run_or_print CMD... execs CMD, or with GLM52_DRY_RUN=1
# prints it as you would type it (arguments with spaces or JSON in single quotes), which is how
# tests compare the scripts with the README without an engine or a GPU.
run_or_print() {
    if [[ ${GLM52_DRY_RUN:-0} != 1 ]]; then
        exec "$@"
    fi
    local out=() arg
    for arg in "$@"; do
        if [[ $arg =~ ^[A-Za-z0-9_./:=@%+-]+$ ]]; then out+=("$arg"); else out+=("'$arg'"); fi
    done
    echo "${out[*]}"
}
