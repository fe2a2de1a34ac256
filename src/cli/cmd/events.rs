//! `ctguard events`: conntrack events like `conntrack -E` (with timestamps), or JSON Lines,
//! printed by a sink for the library's event stream (`ctguard::live::stream`).

use std::io::{self, IsTerminal, Write};
use std::time::SystemTime;

use clap::Args as ClapArgs;
use ctguard::ctnetlink::{EventKind, EventMask, Subscription};
use ctguard::flow::Flow;
use ctguard::live::Shutdown;
use ctguard::live::stream::{EventSink, stream};
use ctguard::live::watcher::Overrun;
use ctguard::output::jsonl;
use ctguard::output::live::{self as view, End, Lost};
use ctguard::requester::Requesters;
use ctguard::select::{self, Selector};

use crate::cli::discovery::Pending;
use crate::cli::exit::{Failure, Outcome};
use crate::cli::live::{self, LiveArgs, LiveSelectArgs};
use crate::cli::select_args::Selection;

/// `ctguard events`.
#[derive(Debug, ClapArgs)]
pub struct Args {
    /// Event kinds, comma separated: new, update, destroy (default: all three). Only these
    /// groups are subscribed.
    #[arg(short = 'e', long = "event", value_name = "LIST", value_parser = event_mask)]
    pub event: Option<EventMask>,
    /// Print JSON Lines: {"type":"new","time":...,"flow":{...}} (with "portid" and "progname"
    /// for an event a process's request caused), and {"type":"lost"} records.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub tail: LiveSelectArgs,
}

/// `--event new,destroy`: the kinds to subscribe to.
fn event_mask(list: &str) -> Result<EventMask, String> {
    let mut m = EventMask::NONE;
    let words = select::comma_list(list, "--event").map_err(|e| match e {
        select::ValueError::Empty(_) => "--event needs at least one of new, update, destroy".into(),
        other => other.to_string(),
    })?;
    for word in words {
        let kind = EventKind::parse(word).ok_or_else(|| {
            format!("invalid --event '{word}' (new, update, destroy, comma separated)")
        })?;
        m = m.with(kind);
    }
    Ok(m)
}

/// `ctguard events`, validated.
#[derive(Debug)]
pub struct Plan {
    sel: Selector,
    /// `--guest` names the host must resolve.
    pending: Pending,
    mask: EventMask,
    json: bool,
    live: LiveArgs,
}

/// Checks the flags; reads the guest file.
pub fn plan(a: Args) -> Result<Plan, String> {
    let Selection { sel, pending, .. } = a.tail.select.selection()?;
    Ok(Plan {
        sel,
        pending,
        mask: a.event.unwrap_or(EventMask::ALL),
        json: a.json,
        live: a.tail.live,
    })
}

/// Runs `ctguard events`.
pub fn run(mut job: Plan, out: &mut impl Write) -> Result<Outcome, Failure> {
    let mut guests = Default::default();
    std::mem::take(&mut job.pending).resolve(&mut job.sel, &mut guests, false)?;
    let rt = live::runtime()?;
    let r = rt.block_on(events_loop(job, out));
    rt.shutdown_background();
    r.map(|()| Outcome::Ok)
}

async fn events_loop(job: Plan, out: &mut impl Write) -> Result<(), Failure> {
    if let (_, Some(warning)) =
        live::events_setting(job.live.enable_events, |_| "they are not shown".into())?
    {
        eprintln!("ctguard: {warning}");
    }
    let mut sub = Subscription::open(job.mask, job.live.buffer)?;
    let stop = live::stopping(job.live.duration)?;
    let mut print = EventPrinter {
        out: &mut *out,
        json: job.json,
        scratch: Vec::new(),
        requesters: Requesters::default(),
    };
    let done = stream(&mut sub, job.mask, &job.sel, job.live.count, &mut print, stop).await?;
    if done.how == Shutdown::Quiet {
        // Nobody reads what is left to say: quietly done (the broken pipe rule).
        return Ok(());
    }
    // The last word: every drop, read from the socket's counter now. The kernel raises
    // ENOBUFS once per congestion (netlink_overrun), so events dropped after the last one
    // were never reported by a `lost` record.
    let end = End::new(done.events, done.overruns, done.lost_events);
    if job.json {
        jsonl::write_line(out, &end)?;
    } else if end.lost_events.is_some_and(|n| n > 0) || end.overruns > 0 {
        eprintln!(
            "ctguard: {} events shown; {} lost in {} receive buffer overruns (raise --buffer)",
            end.events,
            end.lost_events.map_or("some".into(), |n| n.to_string()),
            end.overruns
        );
    } else if io::stderr().is_terminal() {
        eprintln!("ctguard: {} events shown", end.events);
    }
    out.flush()?;
    Ok(())
}

/// Where `events` prints: `conntrack -E` lines or JSON Lines; losses on stderr, or as `lost`
/// records in JSON.
struct EventPrinter<'a, W: Write> {
    out: &'a mut W,
    json: bool,
    scratch: Vec<u8>,
    /// Names the process behind an event's port id, as `conntrack -E` does.
    requesters: Requesters,
}

impl<W: Write> EventSink for EventPrinter<'_, W> {
    type Error = Failure;

    fn event(&mut self, kind: EventKind, flow: &Flow, portid: Option<u32>) -> Result<(), Failure> {
        let now = SystemTime::now();
        let by = portid.map(|p| self.requesters.of(p));
        let by = by.as_ref();
        match self.json {
            true => view::write_event_json(self.out, &mut self.scratch, now, kind, flow, by)?,
            false => view::write_event_line(self.out, now, kind, flow, by)?,
        }
        Ok(())
    }

    fn overrun(&mut self, o: &Overrun) -> Result<(), Failure> {
        let lost = Lost::new(o.overruns, o.lost_events);
        if self.json {
            jsonl::write_line(self.out, &lost)?;
        } else {
            eprintln!(
                "ctguard: receive buffer overrun at {}: {} events lost so far (raise --buffer)",
                lost.time,
                lost.lost_events.map_or("some".into(), |n| n.to_string())
            );
        }
        Ok(())
    }

    fn batch_done(&mut self) -> Result<(), Failure> {
        Ok(self.out.flush()?)
    }
}
