//! `ctguard man DIR`: the manual pages, generated from the clap definition (`clap_mangen`) so
//! they never drift from `--help`: `ctguard.8` and one `ctguard-COMMAND.8` per command, each
//! with its options, its notes (the command's closing `--help` text), the exit status, and
//! where the `--json` schema is written down. scripts/package installs them; a `cargo install`
//! user points this at a directory on their MANPATH.

use std::io::Write;
use std::path::PathBuf;

use clap::{Args as ClapArgs, ValueHint};
use clap_mangen::Man;
use clap_mangen::roff::{Roff, bold, roman};

use crate::cli::exit::{self, Failure, Outcome};

/// The manual section: ctguard administers the host's conntrack table.
const SECTION: &str = "8";

/// Where the `--json` schema is written down: installed by the Debian package, and in the
/// source tree.
const SCHEMA: &str = "/usr/share/doc/ctguard/json-schema.md (docs/json-schema.md in the source)";

/// `ctguard man`.
#[derive(Debug, ClapArgs)]
pub struct Args {
    /// The directory to write ctguard.8 and ctguard-COMMAND.8 into (it must exist).
    #[arg(value_name = "DIR", value_hint = ValueHint::DirPath)]
    pub dir: PathBuf,
}

/// A validated `man`: the directory exists.
pub type Plan = Args;

/// Refuses a `DIR` that is no directory, before anything is written.
pub fn plan(args: Args) -> Result<Plan, String> {
    if !args.dir.is_dir() {
        return Err(format!("man: '{}' is not a directory", args.dir.display()));
    }
    Ok(args)
}

/// Writes every page into the directory, naming each on `out`.
pub fn run(p: Plan, tree: clap::Command, out: &mut impl Write) -> Result<Outcome, Failure> {
    for (name, page) in pages(tree)? {
        let path = p.dir.join(&name);
        // Root writes into a directory a user named: never through a planted link.
        ctguard::atomic_file::write(&path, &page, 0o644)
            .map_err(|e| Failure::Message(format!("writing {}: {e}", path.display())))?;
        writeln!(out, "{}", path.display())?;
    }
    Ok(Outcome::Ok)
}

/// Every page as (file name, roff): the top command's, then one per visible command, in the
/// order `--help` lists them. clap's `help` command is no page of its own.
pub fn pages(tree: clap::Command) -> Result<Vec<(String, Vec<u8>)>, Failure> {
    let mut tree = tree
        .disable_help_subcommand(true)
        .mut_args(aliases_said)
        .mut_subcommands(|sub| sub.mut_args(aliases_said));
    tree.build();
    let mut pages = vec![page(&tree, true)?];
    for sub in tree.get_subcommands().filter(|s| !s.is_hide_set()) {
        pages.push(page(sub, false)?);
    }
    Ok(pages)
}

/// `arg` with its visible aliases at the end of its help, as `--help` shows them: clap_mangen
/// writes no alias, and `-d, --dst` is `--orig-dst` to a conntrack(8) reader.
fn aliases_said(arg: clap::Arg) -> clap::Arg {
    let longs = arg.get_visible_aliases().unwrap_or_default().into_iter().map(|a| format!("--{a}"));
    let shorts = arg.get_visible_short_aliases().unwrap_or_default().into_iter();
    let aliases: Vec<String> = longs.chain(shorts.map(|a| format!("-{a}"))).collect();
    if aliases.is_empty() {
        return arg;
    }
    let help = arg.get_help().map(ToString::to_string).unwrap_or_default();
    let word = if aliases.len() == 1 { "alias" } else { "aliases" };
    arg.help(format!("{help} [{word}: {}]", aliases.join(", ")))
}

/// One page: the title, clap_mangen's sections (name, synopsis, description, options, the
/// commands), then ours.
fn page(cmd: &clap::Command, top: bool) -> Result<(String, Vec<u8>), Failure> {
    let man = Man::new(cmd.clone()).section(SECTION);
    let mut sections: Vec<Section> = vec![
        Man::render_name_section,
        Man::render_synopsis_section,
        Man::render_description_section,
    ];
    if cmd.get_arguments().any(|a| !a.is_hide_set()) {
        sections.push(Man::render_options_section);
    }
    if top {
        sections.push(Man::render_subcommands_section);
    }
    let preamble = Roff::new().render();
    let mut roff = (preamble.clone() + &title(cmd)).into_bytes();
    for render in sections {
        let mut text = Vec::new();
        render(&man, &mut text)
            .map_err(|e| Failure::Message(format!("rendering a man page: {e}")))?;
        roff.extend_from_slice(text.strip_prefix(preamble.as_bytes()).unwrap_or(&text));
    }
    let text = ours(cmd, top).render();
    roff.extend_from_slice(text.strip_prefix(&preamble).unwrap_or(&text).as_bytes());
    Ok((man.get_filename(), roff))
}

/// A clap_mangen section renderer. Each rendering opens with roff's preamble (it defines the
/// apostrophe); a page has it once.
type Section = fn(&Man, &mut dyn Write) -> std::io::Result<()>;

/// The `.TH` line: name, section, no date (the page is as old as the binary), the version,
/// the manual. clap_mangen's drops an empty date unquoted, which shifts the fields after it.
fn title(cmd: &clap::Command) -> String {
    let name = cmd.get_display_name().unwrap_or_else(|| cmd.get_name());
    let version = cmd.get_version().unwrap_or_default();
    format!(".TH {name} {SECTION} \"\" \"ctguard {version}\" \"System Administration\"\n")
}

/// The sections clap_mangen does not write: NOTES (a command's closing `--help` text; the
/// top's is the exit status, written as its own section), EXIT STATUS, JSON OUTPUT (for a
/// command with `--json`) and SEE ALSO.
fn ours(cmd: &clap::Command, top: bool) -> Roff {
    let mut roff = Roff::new();
    if let (false, Some(notes)) = (top, cmd.get_after_help()) {
        roff.control("SH", ["NOTES"]);
        paragraphs(&mut roff, &notes.to_string());
    }
    roff.control("SH", ["EXIT STATUS"]);
    for (code, meaning) in exit::STATUSES {
        roff.control("TP", []).text([bold(code.to_string())]);
        roff.text([roman(meaning.split_whitespace().collect::<Vec<_>>().join(" "))]);
    }
    roff.control("PP", []).text([roman(exit::PRIVILEGES)]);
    if cmd.get_arguments().any(|a| a.get_id() == "json") {
        roff.control("SH", ["JSON OUTPUT"]);
        roff.text([
            roman("With "),
            bold("--json"),
            roman(format!(
                ", stdout carries JSON (Lines: one object a line) and nothing else; the \
                 records and their fields are pinned in {SCHEMA}."
            )),
        ]);
    }
    roff.control("SH", ["SEE ALSO"]);
    let mut see = if top { String::new() } else { "ctguard(8), ".to_string() };
    see.push_str("conntrack(8), ip-netns(8)");
    roff.text([roman(see)]);
    roff
}

/// `text`'s paragraphs (blank-line separated), each one filled by the man reader.
fn paragraphs(roff: &mut Roff, text: &str) {
    for (i, paragraph) in text.split("\n\n").enumerate() {
        if i > 0 {
            roff.control("PP", []);
        }
        roff.text([roman(paragraph.split_whitespace().collect::<Vec<_>>().join(" "))]);
    }
}
