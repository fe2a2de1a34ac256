//! `ctguard completions SHELL`: the completion script of bash, zsh or fish, generated from the
//! clap definition (`clap_complete`), so it offers exactly the flags `--help` lists. Where a
//! shell can call back, a `--guest` value completes to the names `ctguard guests --names`
//! prints (the guest file's and the host's), with the `--guests` and `--netns` already typed.
//!
//! clap_complete's scripts are static: the call back is spliced into each (bash: a wrapper
//! around its function; zsh: the action of `--guest`; fish: the argument of its `-l guest`
//! lines), and a script the splice did not reach is an error, not a script without it.

use std::io::Write;

use clap::{Args as ClapArgs, ValueEnum};
use clap_complete::Shell as Generator;

use crate::cli::exit::{Failure, Outcome};

/// `ctguard completions`.
#[derive(Debug, ClapArgs)]
pub struct Args {
    /// The shell to write the script for (to stdout): bash
    /// (/usr/share/bash-completion/completions/ctguard), zsh (a `_ctguard` in $fpath) or fish
    /// (~/.config/fish/completions/ctguard.fish).
    #[arg(value_enum)]
    pub shell: Shell,
}

/// A validated `completions`: nothing to check.
pub type Plan = Args;

/// The shells whose completion ctguard writes, each with the guest names call back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Shell {
    /// Bash (with the bash-completion package).
    Bash,
    /// Zsh (compsys).
    Zsh,
    /// Fish.
    Fish,
}

/// Writes the completion script of `shell` for the command line `tree` defines.
pub fn run(p: Plan, tree: clap::Command, out: &mut impl Write) -> Result<Outcome, Failure> {
    out.write_all(script(p.shell, tree)?.as_bytes())?;
    Ok(Outcome::Ok)
}

/// The script: clap_complete's, with the guest names call back spliced in.
pub fn script(shell: Shell, mut tree: clap::Command) -> Result<String, Failure> {
    let generator = match shell {
        Shell::Bash => Generator::Bash,
        Shell::Zsh => Generator::Zsh,
        Shell::Fish => Generator::Fish,
    };
    let mut raw = Vec::new();
    clap_complete::generate(generator, &mut tree, "ctguard", &mut raw);
    let raw = String::from_utf8(raw)
        .map_err(|e| Failure::Message(format!("completion script is not UTF-8: {e}")))?;
    let spliced = match shell {
        Shell::Bash => Some(raw + BASH_GUESTS),
        Shell::Zsh => zsh_guests(&raw),
        Shell::Fish => fish_guests(&raw),
    };
    spliced.ok_or_else(|| {
        Failure::Message(format!(
            "the {shell:?} completion script has no `--guest` to complete guest names for"
        ))
    })
}

/// Bash: a wrapper completing `--guest VALUE` (and `--guest=VALUE`, which bash splits at the
/// `=`) from `ctguard guests --names`, and handing every other word to clap's `_ctguard`.
/// Guest names are free strings: each is taken as a literal (never expanded: no `compgen
/// -W`, no unquoted substitution) and inserted quoted (`printf %q`).
/// The words `--guests FILE` and `--netns NAME` already on the line go with the call back.
const BASH_GUESTS: &str = r#"
# ctguard: `--guest` takes the guest names `ctguard guests --names` prints.
_ctguard_guest_names() {
    local i args=()
    for ((i = 1; i < COMP_CWORD; i++)); do
        case ${COMP_WORDS[i]} in
        --guests | --netns)
            if [[ ${COMP_WORDS[i + 1]} == = ]]; then
                args+=("${COMP_WORDS[i]}" "${COMP_WORDS[i + 2]}")
            else
                args+=("${COMP_WORDS[i]}" "${COMP_WORDS[i + 1]}")
            fi
            ;;
        esac
    done
    "${COMP_WORDS[0]}" guests --names "${args[@]}" 2>/dev/null
}

_ctguard_with_guests() {
    local cur=${COMP_WORDS[COMP_CWORD]} prev=${COMP_WORDS[COMP_CWORD - 1]}
    if [[ $cur == = ]]; then
        prev=${COMP_WORDS[COMP_CWORD - 1]} cur=
    elif [[ $prev == = ]] && ((COMP_CWORD > 1)); then
        prev=${COMP_WORDS[COMP_CWORD - 2]}
    fi
    if [[ $prev == --guest ]]; then
        # Not `compgen -W`: it expands each word, so a name like `$(cmd)` would run; each
        # name is matched as a literal prefix and put on the line quoted.
        local name quoted
        COMPREPLY=()
        while IFS= read -r name; do
            if [[ $name == "$cur"* ]]; then
                printf -v quoted '%q' "$name"
                COMPREPLY+=("$quoted")
            fi
        done < <(_ctguard_guest_names)
        return 0
    fi
    _ctguard "$@"
}

if [[ "${BASH_VERSINFO[0]}" -eq 4 && "${BASH_VERSINFO[1]}" -ge 4 || "${BASH_VERSINFO[0]}" -gt 4 ]]; then
    complete -F _ctguard_with_guests -o nosort -o bashdefault -o default ctguard
else
    complete -F _ctguard_with_guests -o bashdefault -o default ctguard
fi
"#;

/// Zsh: `--guest`'s action (clap's `_default`) becomes `_ctguard_guests`, defined before the
/// script's own function; `$words` holds the line typed so far.
fn zsh_guests(raw: &str) -> Option<String> {
    let mut spliced = false;
    let mut out = String::new();
    for line in raw.lines() {
        if line == "_ctguard() {" {
            out.push_str(ZSH_GUESTS);
        }
        match line.strip_suffix(":_default' \\") {
            Some(head) if line.starts_with("'*--guest=[") => {
                out.push_str(head);
                out.push_str(":_ctguard_guests' \\");
                spliced = true;
            }
            _ => out.push_str(line),
        }
        out.push('\n');
    }
    (spliced && out.contains(ZSH_GUESTS)).then_some(out)
}

/// The zsh function `--guest` completes with. `$words` starts at the command's name (clap's
/// script shifts the words for each command): the whole line typed so far is `$LBUFFER`.
const ZSH_GUESTS: &str = r#"# ctguard: `--guest` takes the guest names `ctguard guests --names` prints.
(( $+functions[_ctguard_guests] )) ||
_ctguard_guests() {
    local i
    local -a typed args names
    typed=(${(z)LBUFFER})
    for ((i = 2; i <= $#typed; i++)); do
        case $typed[i] in
        --guests | --netns) args+=("$typed[i]" "$typed[i + 1]") ;;
        --guests=* | --netns=*) args+=("$typed[i]") ;;
        esac
    done
    names=(${(f)"$(${~typed[1]} guests --names "${args[@]}" 2>/dev/null)"})
    # _describe reads `name:description`: a colon in a name is escaped to stay in it.
    names=(${names//:/\\:})
    _describe -t guests 'guest' names
}

"#;

/// Fish: each `-l guest` line gets `-f -a` the call back, which passes on the `--guests` and
/// `--netns` of `commandline -opc` (the words before the cursor).
fn fish_guests(raw: &str) -> Option<String> {
    let mut spliced = false;
    let mut out = String::from(FISH_GUESTS);
    for line in raw.lines() {
        out.push_str(line);
        if line.starts_with("complete -c ctguard ") && line.contains(" -l guest ") {
            out.push_str(" -f -a '(__ctguard_guest_names)'");
            spliced = true;
        }
        out.push('\n');
    }
    spliced.then_some(out)
}

/// The fish function `--guest` completes with.
const FISH_GUESTS: &str = r#"# ctguard: `--guest` takes the guest names `ctguard guests --names` prints.
function __ctguard_guest_names
    set -l words (commandline -opc)
    set -l args
    for i in (seq 2 (count $words))
        switch $words[$i]
            case --guests --netns
                set -a args $words[$i] $words[(math $i + 1)]
            case '--guests=*' '--netns=*'
                set -a args $words[$i]
        end
    end
    for name in ($words[1] guests --names $args 2>/dev/null)
        printf '%s\tguest\n' $name
    end
end

"#;
