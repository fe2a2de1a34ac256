//! Issue 4 on recorded bytes: conntrack events (`tests/fixtures/events.*`, recorded by
//! `scripts/capture-events-fixture`) decode to the lines `conntrack -E` printed for the same
//! events, and drive the live table; the live JSON records are pinned.

use std::time::SystemTime;

use ctguard::Flow;
use ctguard::ctnetlink::{EventKind, decode_event, requester};
use ctguard::guests::GuestMap;
use ctguard::live::Classifier;
use ctguard::output::live::{End, Lost, Resync, Snapshot, write_event_line};
use ctguard::requester::Requester;
use ctguard::select::Selector;
use ctguard::tally::GroupBy;

use crate::fixtures::unhex;

const EVENTS_HEX: &str = include_str!("../fixtures/events.hex");
const EVENTS_CONNTRACK_E: &str = include_str!("../fixtures/events.conntrack-E.txt");

fn events() -> Vec<(EventKind, Flow)> {
    EVENTS_HEX
        .lines()
        .map(|line| {
            let mut flow = Flow::default();
            let kind = decode_event(&unhex(line), &mut flow)
                .expect("recorded event decodes")
                .expect("recorded message is an event");
            (kind, flow)
        })
        .collect()
}

/// A `conntrack -E -o timestamp` line without its timestamp and without what conntrack adds
/// for events a userspace program caused (`[USERSPACE] portid=N progname=NAME`).
fn comparable(line: &str) -> &str {
    let line = line.split_once('\t').map_or(line, |(_, rest)| rest);
    line.split_once(" [USERSPACE]").map_or(line, |(head, _)| head)
}

#[test]
fn recorded_events_print_as_conntrack_e_printed_them() {
    let events = events();
    let want: Vec<&str> = EVENTS_CONNTRACK_E.lines().map(comparable).collect();
    assert_eq!(events.len(), want.len(), "both listeners heard the same events");
    for ((kind, flow), want) in events.iter().zip(want) {
        let mut out = Vec::new();
        write_event_line(&mut out, SystemTime::UNIX_EPOCH, *kind, flow, None).unwrap();
        let got = String::from_utf8(out).unwrap();
        assert_eq!(comparable(got.trim_end()), want);
    }
    let kinds: Vec<&str> = events.iter().map(|(k, _)| k.name()).collect();
    assert_eq!(
        kinds,
        [
            "new", "update", "destroy", "new", "destroy", "new", "new", "new", "destroy",
            "destroy", "destroy"
        ]
    );
}

/// The `portid=N` and `progname=NAME` a `conntrack -E` line ends with, if any.
fn userspace_of(line: &str) -> Option<(u32, Option<&str>)> {
    let (_, tail) = line.split_once(" [USERSPACE] ")?;
    let mut words = tail.split(' ');
    let portid = words.next()?.strip_prefix("portid=")?.parse().ok()?;
    Some((portid, words.next().and_then(|w| w.strip_prefix("progname="))))
}

#[test]
fn issue_16_7_recorded_events_carry_the_port_id_conntrack_e_printed() {
    let mut userspace = 0;
    for (hex, want) in EVENTS_HEX.lines().zip(EVENTS_CONNTRACK_E.lines()) {
        let msg = unhex(hex);
        let printed = userspace_of(want);
        assert_eq!(requester(&msg), printed.map(|(p, _)| p), "{want}");
        // With the program conntrack found, the whole line after the timestamp is conntrack's.
        let mut flow = Flow::default();
        let kind = decode_event(&msg, &mut flow).unwrap().unwrap();
        let by =
            printed.map(|(portid, name)| Requester { portid, progname: name.map(str::to_string) });
        let mut out = Vec::new();
        write_event_line(&mut out, SystemTime::UNIX_EPOCH, kind, &flow, by.as_ref()).unwrap();
        let got = String::from_utf8(out).unwrap();
        let after_time = |l: &str| l.split_once('\t').map(|(_, r)| r.to_string());
        assert_eq!(after_time(got.trim_end()), after_time(want));
        userspace += usize::from(printed.is_some());
    }
    assert_eq!(userspace, EVENTS_CONNTRACK_E.lines().count(), "conntrack made every event");
}

#[test]
fn recorded_events_drive_the_live_table() {
    let c = Classifier::new(Selector::default(), GroupBy::State, GuestMap::new());
    let mut table = c.empty_table();
    let events = events();
    let mut states_after_8 = Vec::new();
    for (i, (kind, flow)) in events.iter().enumerate() {
        assert!(flow.id.is_some(), "every event carries CTA_ID");
        table.apply(&c.change(*kind, flow));
        if i == 7 {
            states_after_8 = table
                .tally()
                .sorted()
                .iter()
                .map(|(k, r)| (table.tally().label(k), r.total))
                .collect();
        }
    }
    states_after_8.sort();
    assert_eq!(
        states_after_8,
        [("ESTABLISHED".to_string(), 1), ("icmp".into(), 1), ("sctp/ESTABLISHED".into(), 1)]
    );
    assert!(table.is_empty(), "every flow was destroyed in the end");
    assert_eq!(table.tally().total().total, 0);
}

#[test]
fn live_records_reject_unknown_fields() {
    let snap = r#"{"type":"snapshot","time":"2026-11-27T05:35:53.198266Z","table":{"count":1,"max":262144,"fill_percent":0.0,"buckets":262144},"by":"src","matched":1,"groups":[{"key":"10.0.0.1","entries":1,"share_percent":100.0,"states":{"SYN_SENT":1}}],"rates":{"new_per_s":2.0,"destroy_per_s":0.0,"events_per_s":3.9},"events":2,"overruns":0,"resyncs":1,"synced":true}"#;
    let s: Snapshot = serde_json::from_str(snap).unwrap();
    assert_eq!((s.report.matched, s.status.events, s.status.synced), (1, 2, true));
    assert_eq!(serde_json::to_string(&s).unwrap(), snap, "written as documented");
    let extra = snap.replace("\"synced\":true", "\"synced\":true,\"exact\":true");
    assert!(serde_json::from_str::<Snapshot>(&extra).is_err());

    let resync = r#"{"type":"resync","time":"t","reason":"overrun","matched":5,"corrected":-3,"replayed":7,"took_ms":12}"#;
    let r: Resync = serde_json::from_str(resync).unwrap();
    assert_eq!(serde_json::to_string(&r).unwrap(), resync);
    let lost = Lost::new(2, Some(19591));
    let text = serde_json::to_string(&lost).unwrap();
    assert!(
        text.starts_with(r#"{"type":"lost","time":""#)
            && text.ends_with(r#","overruns":2,"lost_events":19591}"#)
    );
    assert!(serde_json::from_str::<Lost>(&text.replace("\"overruns\"", "\"overrun\"")).is_err());
    let end = serde_json::to_string(&End::new(158_738, 3, Some(85_802))).unwrap();
    assert!(
        end.starts_with(r#"{"type":"end","time":""#)
            && end.ends_with(r#","events":158738,"overruns":3,"lost_events":85802}"#),
        "{end}"
    );
    assert!(serde_json::from_str::<End>(&end.replace("\"events\"", "\"shown\"")).is_err());
}

#[test]
fn schema_doc_live_examples_parse_as_their_records() {
    let doc = include_str!("../../docs/json-schema.md");
    let live = &doc[doc.find("## Live records").expect("live section")..];
    let block = live.split("```jsonl\n").nth(1).expect("a jsonl example block");
    let lines: Vec<&str> = block.split("\n```").next().unwrap_or("").lines().collect();
    assert_eq!(lines.len(), 4);
    for line in lines {
        let kind = serde_json::from_str::<serde_json::Value>(line).unwrap()["type"].clone();
        let back = match kind.as_str() {
            Some("snapshot") => {
                serde_json::to_string(&serde_json::from_str::<Snapshot>(line).unwrap())
            }
            Some("resync") => serde_json::to_string(&serde_json::from_str::<Resync>(line).unwrap()),
            Some("lost") => serde_json::to_string(&serde_json::from_str::<Lost>(line).unwrap()),
            Some("end") => serde_json::to_string(&serde_json::from_str::<End>(line).unwrap()),
            other => panic!("unknown record type {other:?}"),
        };
        assert_eq!(back.unwrap(), line, "the doc shows the record as ctguard writes it");
    }
}

#[test]
fn live_bad_input_is_refused_before_any_namespace_or_socket() {
    // A namespace that does not exist: the plan must refuse the input before entering it.
    for (args, says) in [
        (&["watch", "--interval", "0"][..], "--interval"),
        (&["watch", "--buffer", "64Q"], "--buffer"),
        (&["watch", "--reconcile", "sometimes"], "--reconcile"),
        (&["watch", "--idle", "1h"], "--idle"),
        (&["watch", "-n", "0"], "-n"),
        (&["events", "--event", "created"], "--event"),
        (&["events", "--count", "many"], "--count"),
        (&["events", "--enable-events", "--state", "BOGUS"], "BOGUS"),
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_ctguard"))
            .args(["--netns", "/nonexistent/ctguard-htest"])
            .args(args)
            .env_remove("CTGUARD_GUESTS")
            .output()
            .expect("run the ctguard binary");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(out.stdout.is_empty(), "{args:?}");
        assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
        assert!(stderr.starts_with("ctguard: ") && stderr.contains(says), "{args:?}: {stderr}");
        assert!(!stderr.contains("nonexistent"), "{args:?}: refused too late: {stderr}");
    }
}

/// The live engine on an injected kernel: scripted subscriptions, scripted dumps, a fixed
/// entry count; what it hands its sink is checked.
mod engine {
    use std::collections::VecDeque;
    use std::time::Duration;

    use ctguard::Flow;
    use ctguard::ctnetlink::{self, EventKind, EventMask, Received, TableStats};
    use ctguard::guests::GuestMap;
    use ctguard::live::stream::{EventSink, Streamed, stream};
    use ctguard::live::watcher::{DumpTask, Events, Overrun};
    use ctguard::live::{
        Classifier, Config, Kernel, Reason, Resynced, Shutdown, Sink, View, Watcher,
    };
    use ctguard::select::Selector;
    use ctguard::tally::GroupBy;

    /// One `recv` of a scripted subscription.
    enum Step {
        Events(Vec<(EventKind, Flow)>),
        Overrun,
    }

    struct Script(VecDeque<Step>);

    impl Events for Script {
        async fn recv(
            &mut self,
            mut each: impl FnMut(EventKind, &Flow, Option<u32>),
        ) -> Result<Received, ctnetlink::Error> {
            // Taken when polled, not when made: a future dropped unpolled loses nothing.
            match self.0.pop_front() {
                None => std::future::pending().await,
                Some(Step::Overrun) => Ok(Received { overrun: true, ..Received::default() }),
                Some(Step::Events(v)) => {
                    for (kind, flow) in &v {
                        each(*kind, flow, None);
                    }
                    Ok(Received { events: v.len(), overrun: false, drained: true })
                }
            }
        }

        fn drops(&self) -> Option<u64> {
            Some(7)
        }
    }

    struct Fake {
        subscriptions: VecDeque<Script>,
        dumps: VecDeque<Vec<Flow>>,
        count: u32,
    }

    impl Kernel for Fake {
        type Events = Script;

        fn subscribe(&mut self) -> Result<Script, ctnetlink::Error> {
            Ok(self.subscriptions.pop_front().unwrap_or(Script(VecDeque::new())))
        }

        fn dump(&mut self, c: &Classifier) -> Result<DumpTask, ctnetlink::Error> {
            let flows = self.dumps.pop_front().unwrap_or_default();
            let c = c.clone();
            Ok(tokio::task::spawn_blocking(move || {
                let mut t = c.empty_table();
                for f in &flows {
                    if let Some(p) = c.place(f) {
                        t.seed(f.identity(), p);
                    }
                }
                Ok(t)
            }))
        }

        fn table_stats(&mut self) -> Option<TableStats> {
            Some(TableStats { count: self.count, max: 1000 })
        }
    }

    #[derive(Default)]
    struct Seen {
        resyncs: Vec<Resynced>,
        overruns: Vec<Overrun>,
        /// (matched, events, overruns, resyncs, synced) per snapshot.
        snapshots: Vec<(u64, u64, u64, u64, bool)>,
    }

    impl Sink for Seen {
        type Error = ctguard::live::watcher::Error;

        fn overrun(&mut self, o: &Overrun) -> Result<(), Self::Error> {
            self.overruns.push(*o);
            Ok(())
        }

        fn resynced(&mut self, r: &Resynced) -> Result<(), Self::Error> {
            self.resyncs.push(*r);
            Ok(())
        }

        fn snapshot(&mut self, v: &View<'_>) -> Result<(), Self::Error> {
            let matched = v.table.len() as u64;
            self.snapshots.push((matched, v.events, v.overruns, v.resyncs, v.synced));
            Ok(())
        }
    }

    fn flow(id: u32) -> Flow {
        let mut f = super::events()[0].1.clone();
        f.id = Some(id);
        f.orig.src = format!("10.0.0.{id}").parse().unwrap();
        f
    }

    fn run(kernel: &mut Fake, cfg: &Config, seen: &mut Seen) -> Shutdown {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let never = std::future::pending::<Shutdown>();
            let watcher = Watcher::new(cfg, kernel, seen);
            tokio::time::timeout(Duration::from_secs(20), watcher.run(never))
                .await
                .expect("the engine stops after its snapshots")
                .unwrap()
        })
    }

    #[test]
    fn issue_11_1_seed_overrun_resync_on_an_injected_kernel() {
        use EventKind::{Destroy, New};
        let cfg = Config {
            classifier: Classifier::new(Selector::default(), GroupBy::Src, GuestMap::new()),
            interval: Duration::from_millis(100),
            reconcile: None,
            snapshots: Some(3),
            wake: None,
        };
        // The kernel's story: 1 and 2 exist and are dumped; 3 is created and 1 ends; events
        // are lost (4 is created unseen); the second dump has 2, 3, 4; then 5 is created.
        let first = Script(VecDeque::from([
            Step::Events(vec![(New, flow(3)), (Destroy, flow(1))]),
            Step::Overrun,
        ]));
        let second = Script(VecDeque::from([Step::Events(vec![(New, flow(5))])]));
        let mut kernel = Fake {
            subscriptions: VecDeque::from([first, second]),
            dumps: VecDeque::from([vec![flow(1), flow(2)], vec![flow(2), flow(3), flow(4)]]),
            count: 4,
        };
        let mut seen = Seen::default();
        assert_eq!(run(&mut kernel, &cfg, &mut seen), Shutdown::Now);
        assert!(kernel.subscriptions.is_empty(), "subscribed again after the overrun");
        assert_eq!(seen.overruns, [Overrun { overruns: 1, lost_events: Some(7) }]);
        // The seed may finish before the overrun or be thrown away by it; the overrun's
        // resync comes last either way and holds the truth.
        let last = seen.resyncs.last().expect("a resync");
        assert_eq!(last.reason, Reason::Overrun);
        assert_eq!(last.matched, 3 + u64::from(last.replayed == 1));
        assert_eq!(seen.snapshots.len(), 3, "stops after --count snapshots");
        let (matched, events, overruns, resyncs, synced) = *seen.snapshots.last().unwrap();
        assert_eq!((matched, events, overruns), (4, 3, 1), "{:?}", seen.snapshots);
        assert_eq!(resyncs, seen.resyncs.len() as u64);
        assert!(synced, "held 4 = the table's 4, no resync pending: {:?}", seen.snapshots);
    }

    /// What `events` would print, as (kind, id), and the losses it was told of.
    #[derive(Default)]
    struct Printed {
        events: Vec<(EventKind, u32)>,
        overruns: Vec<Overrun>,
    }

    impl EventSink for Printed {
        type Error = ctguard::live::watcher::Error;

        fn event(
            &mut self,
            kind: EventKind,
            flow: &Flow,
            _: Option<u32>,
        ) -> Result<(), Self::Error> {
            self.events.push((kind, flow.id.unwrap_or(0)));
            Ok(())
        }

        fn overrun(&mut self, o: &Overrun) -> Result<(), Self::Error> {
            self.overruns.push(*o);
            Ok(())
        }

        fn batch_done(&mut self) -> Result<(), Self::Error> {
            Ok(())
        }
    }

    #[test]
    fn issue_11_1_the_event_stream_filters_counts_losses_and_stops_at_its_limit() {
        use EventKind::{Destroy, New, Update};
        let mut other = flow(4);
        other.orig.src = "192.0.2.1".parse().unwrap();
        let mut script = Script(VecDeque::from([
            Step::Events(vec![(New, flow(1)), (Update, flow(1)), (New, other)]),
            Step::Overrun,
            Step::Events(vec![(New, flow(2)), (Destroy, flow(1)), (New, flow(3))]),
        ]));
        let sel = Selector { src: vec!["10.0.0.0/24".parse().unwrap()], ..Selector::default() };
        let mask = EventMask::NONE.with(New).with(Destroy);
        let mut seen = Printed::default();
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let never = std::future::pending::<Shutdown>();
        let done = rt
            .block_on(stream(&mut script, mask, &sel, Some(3), &mut seen, never))
            .expect("the stream ends at its limit");
        assert_eq!(seen.events, [(New, 1), (New, 2), (Destroy, 1)], "no UPDATE, no 192.0.2.1");
        assert_eq!(seen.overruns, [Overrun { overruns: 1, lost_events: Some(7) }]);
        assert_eq!(
            done,
            Streamed { events: 3, overruns: 1, lost_events: Some(7), how: Shutdown::Now }
        );
        // A shutdown ends it too, and says how.
        let mut quiet = Script(VecDeque::new());
        let gone = std::future::ready(Shutdown::Quiet);
        let done = rt.block_on(stream(&mut quiet, mask, &sel, None, &mut seen, gone)).unwrap();
        assert_eq!((done.events, done.how), (0, Shutdown::Quiet));
    }

    /// The guard's wake: a notification is a snapshot at once, long before the interval's.
    #[test]
    fn issue_13_a_wake_is_a_snapshot_without_waiting_for_the_interval() {
        let snapshots_in_300ms = |wake: Option<std::sync::Arc<tokio::sync::Notify>>| {
            let cfg = Config {
                classifier: Classifier::new(Selector::default(), GroupBy::Src, GuestMap::new()),
                interval: Duration::from_secs(3600),
                reconcile: None,
                snapshots: None,
                wake,
            };
            let mut kernel = Fake {
                subscriptions: VecDeque::new(),
                dumps: VecDeque::from([vec![flow(1)]]),
                count: 1,
            };
            let mut seen = Seen::default();
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            let how = rt.block_on(async {
                let stop = async {
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    Shutdown::Now
                };
                Watcher::new(&cfg, &mut kernel, &mut seen).run(stop).await.unwrap()
            });
            assert_eq!(how, Shutdown::Now);
            seen.snapshots
        };
        assert!(snapshots_in_300ms(None).is_empty(), "an hour's interval: no snapshot yet");
        // Notified before the seed: the permit waits, and the snapshot comes once seeded.
        let wake = std::sync::Arc::new(tokio::sync::Notify::new());
        wake.notify_one();
        assert_eq!(snapshots_in_300ms(Some(wake)), [(1, 0, 0, 1, true)]);
    }

    #[test]
    fn issue_11_1_a_count_the_table_disagrees_with_is_not_synced() {
        let cfg = Config {
            classifier: Classifier::new(Selector::default(), GroupBy::Src, GuestMap::new()),
            interval: Duration::from_millis(50),
            reconcile: None,
            snapshots: Some(2),
            wake: None,
        };
        let mut kernel = Fake {
            subscriptions: VecDeque::new(),
            dumps: VecDeque::from([vec![flow(1)]]),
            count: 500,
        };
        let mut seen = Seen::default();
        run(&mut kernel, &cfg, &mut seen);
        assert_eq!(seen.resyncs.len(), 1, "--reconcile off: a mismatch dumps nothing");
        assert!(seen.snapshots.iter().all(|s| s.0 == 1 && !s.4), "{:?}", seen.snapshots);
    }
}
