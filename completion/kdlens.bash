# SPDX-License-Identifier: MIT
# bash completion for kdlens: commands, their options, the values their help
# lists, and the checkpoint and layer names of the dumps on the command line.
# What to offer comes from kdlens itself ('kdlens __complete WORD...', from
# the same command table as 'kdlens help'), so it cannot disagree with it.
# Installed as share/bash-completion/completions/kdlens; or: source this file.

_kdlens()
{
        local cur=${COMP_WORDS[COMP_CWORD]} kind word
        local -a out
        local IFS=$'\n'

        COMPREPLY=()
        out=($(command "${COMP_WORDS[0]}" __complete "${COMP_WORDS[@]:1:COMP_CWORD}" \
                2>/dev/null)) || return 0
        kind=${out[0]}
        case $kind in
        dumps)
                compopt -o filenames 2>/dev/null
                COMPREPLY=($(compgen -d -- "$cur") $(compgen -f -X '!*.h5' -- "$cur"))
                ;;
        files)
                compopt -o filenames 2>/dev/null
                COMPREPLY=($(compgen -f -- "$cur"))
                ;;
        dirs)
                compopt -o filenames 2>/dev/null
                COMPREPLY=($(compgen -d -- "$cur"))
                ;;
        words)
                [[ $cur == = ]] && cur=
                for word in "${out[@]:1}"; do
                        # A name with blanks or quotes (a checkpoint may have any) as one word.
                        if [[ $word == *[[:space:]\'\"\\]* ]]; then
                                printf -v word '%q' "$word"
                        fi
                        COMPREPLY+=("$word")
                done
                ;;
        esac
        return 0
}

complete -F _kdlens kdlens
