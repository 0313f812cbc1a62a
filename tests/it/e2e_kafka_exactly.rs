//! Exactly once across indexers (docs/kafka.md, "Exactly once"): an indexer
//! whose index holds a commit interval the group's offset does not, and
//! whose partition another indexer then reads from the group's offset,
//! drops its copy. Real broker (tansu), real processes; the window between
//! the two commits is hit on purpose with the indexer's fault injection
//! (`NIGHTOWL_FAULT_GROUP_COMMIT`), and by chance in the chaos test.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::common::{self, wait_until, ChildGuard, Rng, COMMIT_INTERVAL_MS, DEADLINE};
use crate::e2e_kafka::{write_more, KafkaCluster, SESSION_MS};

/// The exit status of `NIGHTOWL_FAULT_GROUP_COMMIT=exit:N`.
const FAULT_EXIT: i32 = 86;

fn rollbacks(cluster: &KafkaCluster, indexer: usize) -> (f64, f64) {
    (
        cluster
            .indexer_metric(indexer, "nightowl_kafka_rollbacks_total")
            .unwrap_or(0.0),
        cluster
            .indexer_metric(indexer, "nightowl_kafka_rollback_lines_total")
            .unwrap_or(0.0),
    )
}

/// Ships `files` × `each` new numbered lines with one agent run.
fn ship(cluster: &KafkaCluster, tag: &str, first: u64, files: usize, each: u64) -> u64 {
    cluster.ship(&write_more(
        &cluster.collector.root,
        tag,
        files,
        first,
        each,
    ));
    files as u64 * each
}

/// Indexer 0 alone, with a tailing agent, dies right after the index
/// commit of its third round with lines: its index holds that round, the
/// group's offsets the two before. Returns the agent's logs dir, its
/// guards, and the lines written.
fn die_after_third_index_commit(
    cluster: &mut KafkaCluster,
) -> (PathBuf, (PathBuf, ChildGuard), u64) {
    cluster.indexers[0].start_with_fault("exit:3");
    cluster.wait_for_sole_owner(0);
    let (logs, state, agent) = cluster.tailing_agent();
    let mut written = 0;
    let started = Instant::now();
    while cluster.indexers[0].is_running() {
        assert!(
            started.elapsed() < DEADLINE,
            "indexer 0 never reached its third commit round; {written} lines written"
        );
        write_more(&logs, &format!("w{written}"), 4, written, EACH);
        written += 4 * EACH;
        std::thread::sleep(Duration::from_millis(2 * COMMIT_INTERVAL_MS));
    }
    let status = cluster.indexers[0].wait_exit();
    assert_eq!(status.code(), Some(FAULT_EXIT), "indexer 0: {status}");
    (logs, (state, agent), written)
}

/// Lines per file of [`die_after_third_index_commit`] and after it.
const EACH: u64 = 1_000;

#[test]
fn an_indexer_dying_between_its_index_and_group_commits_drops_what_another_indexed_again() {
    let mut cluster = KafkaCluster::prepare(2, "", "");
    let (logs, _agent, mut written) = die_after_third_index_commit(&mut cluster);
    let each = EACH;

    // Its partitions go to indexer 1 (tansu moves a dead member's
    // partitions once its session expired), which reads them from the
    // group's offsets: the last round again.
    std::thread::sleep(Duration::from_millis(SESSION_MS + 1000));
    cluster.indexers[1].start();
    cluster.wait_for_sole_owner(1);
    write_more(&logs, "after", 4, written, each);
    written += 4 * each;

    // Indexer 0 comes back: before it serves, it drops the round indexer 1
    // read again. The fan-out never counts a line twice from here on.
    cluster.indexers[0].start();
    cluster.wait_for_split();
    let collector = cluster.collector.server();
    cluster.wait_for_count_via(&collector, written);
    assert_eq!(
        cluster.local_count(0) + cluster.local_count(1),
        written,
        "the two indexers' own shards split the lines"
    );
    let (rolled, lines) = rollbacks(&cluster, 0);
    assert!(
        rolled >= 1.0 && lines > 0.0,
        "indexer 0 rolled back the round it died in: {rolled} partitions, {lines} lines"
    );
    assert_eq!(
        rollbacks(&cluster, 1),
        (0.0, 0.0),
        "indexer 1 held nothing twice"
    );
    eprintln!("indexer 0 rolled back {rolled} partitions, {lines} lines (of {written})");
}

#[test]
fn an_indexer_restarting_while_another_takes_its_partitions_rolls_back_to_the_recorded_start() {
    let mut cluster = KafkaCluster::prepare(2, "", "");
    let (logs, _agent, mut written) = die_after_third_index_commit(&mut cluster);
    let each = EACH;
    std::thread::sleep(Duration::from_millis(SESSION_MS + 1000));

    // It restarts and reads the ownership topic (itself the last owner),
    // then is held before its rollback while indexer 1 takes every
    // partition from the group's offsets, records its start, and indexes
    // and commits past them (the CI run of the chaos test met this order
    // by chance). It does not follow the topic afterwards, so whatever
    // its start left stays.
    let gate = cluster.indexers[0].root.join("start-gate");
    let reached = cluster.indexers[0].root.join("start-gate.reached");
    cluster.indexers[0].spawn_with_env(&[
        (
            "NIGHTOWL_FAULT_START_GATE",
            gate.to_str().expect("a UTF-8 path"),
        ),
        ("NIGHTOWL_FAULT_FOLLOW", "off"),
    ]);
    wait_until("indexer 0 at its start gate", || {
        reached.exists().then_some(())
    });
    cluster.indexers[1].start();
    cluster.wait_for_sole_owner(1);
    write_more(&logs, "after", 4, written, each);
    // The last line of each new file is in indexer 1's index, and with
    // it everything before it from the group's offsets on, the round
    // indexer 0 also holds included; its group commit follows each index
    // commit.
    let server = cluster.indexers[1].server();
    for file in 0..4 {
        let last = written + file * each + each - 1;
        let query = format!("/api/v1/count?q=seq{last:07}&local=true");
        wait_until("indexer 1 to index the new lines", || {
            (cluster.get_json(&server, &query)["count"].as_u64() == Some(1)).then_some(())
        });
    }
    written += 4 * each;
    std::thread::sleep(Duration::from_millis(4 * COMMIT_INTERVAL_MS));

    std::fs::write(&gate, b"").expect("opening the gate");
    cluster.indexers[0].wait_ready();
    cluster.wait_for_split();
    let (rolled, lines) = rollbacks(&cluster, 0);
    assert!(
        rolled >= 1.0 && lines > 0.0,
        "indexer 0 rolled back the round it died in: {rolled} partitions, {lines} lines"
    );
    let collector = cluster.collector.server();
    cluster.wait_for_count_via(&collector, written);
    assert_eq!(
        cluster.local_count(0) + cluster.local_count(1),
        written,
        "the two indexers' own shards split the lines, none held twice"
    );
}

#[test]
fn an_indexer_whose_group_commits_fail_drops_the_partitions_another_indexer_reads_again() {
    let mut cluster = KafkaCluster::prepare(2, "", "");
    // Its index commits, its group commits never happen: as a member whose
    // commits the group refuses. It stays up and keeps serving.
    cluster.indexers[0].start_with_fault("skip");
    cluster.wait_for_sole_owner(0);
    let total = ship(&cluster, "before", 0, 8, 2_500);
    wait_until("indexer 0 to index every line", || {
        (cluster.local_count(0) == total).then_some(())
    });

    // Indexer 1 joins and takes two partitions from their start (the group
    // has no offset): indexer 0 reads its ownership message and drops them.
    cluster.indexers[1].start();
    cluster.wait_for_split();
    let collector = cluster.collector.server();
    // Until indexer 0 has read that message (a poll of the ownership topic
    // after indexer 1's first commit) a line may be counted twice: it is
    // alive and could not know sooner. Then exactly once, for good.
    let mut highest = 0;
    let (a, b) = wait_until("the indexers' own shards to split the lines", || {
        highest = highest.max(cluster.count_via(&collector, "*"));
        let (a, b) = (cluster.local_count(0), cluster.local_count(1));
        (b > 0 && a + b == total).then_some((a, b))
    });
    for _ in 0..5 {
        assert_eq!(cluster.count_via(&collector, "*"), total);
        std::thread::sleep(Duration::from_millis(COMMIT_INTERVAL_MS));
    }
    assert_eq!(
        (cluster.local_count(0), cluster.local_count(1)),
        (a, b),
        "nothing moved since"
    );
    let (rolled, lines) = rollbacks(&cluster, 0);
    assert_eq!(
        lines as u64, b,
        "indexer 0 dropped exactly what indexer 1 indexed again ({rolled} partitions)"
    );
    eprintln!("highest count seen: {highest} of {total}");
}

/// Random `kill -9`s of three indexers during a shipment, each restarted
/// at a random time, half of the restarts armed to die again right after
/// an index commit (the window itself): every line is searchable through
/// the fan-out exactly once, and more than once only for the moment
/// docs/kafka.md allows.
///
/// The size: 1M lines shipped over 75 s, 10 deaths (about three
/// minutes on the 2-core VM). `NIGHTOWL_CHAOS_LINES` (a multiple of 250)
/// and `NIGHTOWL_CHAOS_DEATHS` scale it; `NIGHTOWL_CHAOS_SEED` replays a
/// run.
#[test]
fn three_indexers_killed_at_random_during_a_shipment_search_every_line_once() {
    const INDEXERS: usize = 3;
    const WAVES: u64 = 50;
    const FILES: usize = 5;
    const ARMED_GRACE: Duration = Duration::from_secs(10);
    let env = |name: &str, default: u64| {
        std::env::var(name)
            .ok()
            .and_then(|s| s.parse::<u64>().ok())
            .unwrap_or(default)
    };
    let lines = env("NIGHTOWL_CHAOS_LINES", 1_000_000);
    let each: u64 = lines / (WAVES * FILES as u64);
    let total = WAVES * FILES as u64 * each;
    let deaths_wanted = env("NIGHTOWL_CHAOS_DEATHS", 10) as usize;
    // Ten minutes, or more in proportion to a larger size.
    let budget = Duration::from_secs(600.max(total / 500));
    let seed = std::env::var("NIGHTOWL_CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| common::now_unix() as u64);
    eprintln!("chaos seed {seed} (NIGHTOWL_CHAOS_SEED={seed} replays it)");
    let mut rng = Rng::new(seed);

    let mut cluster = KafkaCluster::prepare(INDEXERS, "", "");
    for indexer in &mut cluster.indexers {
        indexer.start();
    }
    cluster.wait_for_split();
    let (logs, _state, _agent) = cluster.tailing_agent();
    let collector = cluster.collector.server();

    let wave_every = Duration::from_millis(1_500);
    let mut written = 0;
    let mut next_wave = Instant::now();
    let mut deaths = 0;
    // When each indexer died, if it is down; the last death of any.
    let mut down: [Option<Instant>; INDEXERS] = [None; INDEXERS];
    let mut last_death = Instant::now();
    let mut restart_after = Duration::ZERO;
    let mut next_kill = Instant::now() + Duration::from_millis(1_000 + rng.below(3_000));
    let mut next_check = Instant::now();
    let mut armed = [false; INDEXERS];
    let mut restarts_armed = 0;
    let mut transient_overcounts = 0;
    let started = Instant::now();
    loop {
        assert!(
            started.elapsed() < budget,
            "chaos ran {budget:?}: {written} lines written, {deaths} deaths"
        );
        let now = Instant::now();
        if written < total && now >= next_wave {
            write_more(&logs, &format!("w{written}"), FILES, written, each);
            written += FILES as u64 * each;
            next_wave = now + wave_every;
        }
        // Deaths: an armed indexer that hit its fault, or a kill -9.
        for i in 0..INDEXERS {
            if down[i].is_none() && !cluster.indexers[i].is_running() {
                let status = cluster.indexers[i].wait_exit();
                assert_eq!(status.code(), Some(FAULT_EXIT), "indexer {i}: {status}");
                eprintln!("indexer {i} died at its fault, at {:?}", started.elapsed());
                down[i] = Some(now);
                armed[i] = false;
                last_death = now;
                deaths += 1;
                restart_after = Duration::from_millis(SESSION_MS + 500 + rng.below(2_000));
            }
        }
        // A random kill -9, unless an armed indexer is still to die at its
        // fault; one that has not within 10 s is killed instead.
        let overdue = (0..INDEXERS).find(|&i| armed[i] && now >= next_kill + ARMED_GRACE);
        let waiting = armed.iter().any(|&a| a) && overdue.is_none();
        if deaths < deaths_wanted
            && down.iter().all(Option::is_none)
            && now >= next_kill
            && !waiting
        {
            let i = overdue.unwrap_or_else(|| rng.below(INDEXERS as u64) as usize);
            eprintln!("kill -9 indexer {i} at {:?}", started.elapsed());
            cluster.indexers[i].kill();
            down[i] = Some(now);
            armed[i] = false;
            last_death = now;
            deaths += 1;
            restart_after = Duration::from_millis(SESSION_MS + 500 + rng.below(2_000));
        }
        // Restarts once tansu dropped every dead member (its sessions
        // expired: docs/kafka-broker.md, quirk 4).
        if now.duration_since(last_death) >= restart_after {
            for i in 0..INDEXERS {
                if down[i].take().is_some() {
                    if deaths < deaths_wanted && rng.below(2) == 0 {
                        let round = 2 + rng.below(4);
                        eprintln!("restart indexer {i}, armed to die at round {round}");
                        cluster.indexers[i].start_with_fault(&format!("exit:{round}"));
                        armed[i] = true;
                        restarts_armed += 1;
                    } else {
                        eprintln!("restart indexer {i}");
                        cluster.indexers[i].start();
                    }
                    next_kill = Instant::now() + Duration::from_millis(1_000 + rng.below(4_000));
                }
            }
        }
        // A line twice only for a moment: a running indexer serves no line
        // another one indexed again (a dead one's answer is missing, so the
        // count may be short), except in the window docs/kafka.md names (a
        // member fenced while paused learns it from the next owner's
        // message, and rolls back within 50 ms plus the delete). An
        // over-count must be gone half a second later.
        if now >= next_check {
            let n = cluster.count_via(&collector, "*");
            if n > written {
                std::thread::sleep(Duration::from_millis(500));
                let again = cluster.count_via(&collector, "*");
                eprintln!("{n} lines searchable for a moment, {written} written; then {again}");
                assert!(
                    again <= written,
                    "{n}, then {again} lines searchable, {written} written: duplicates (seed {seed})"
                );
                transient_overcounts += 1;
            }
            next_check = now + Duration::from_millis(1_000);
        }
        if written >= total && deaths >= deaths_wanted && down.iter().all(Option::is_none) {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    // An indexer still armed could die while the last lines are indexed:
    // it leaves cleanly (SIGTERM, LeaveGroup) and comes back unarmed; one
    // that died meanwhile is restarted after its session.
    for (i, indexer) in cluster.indexers.iter_mut().enumerate() {
        if !indexer.is_running() {
            let status = indexer.wait_exit();
            assert_eq!(status.code(), Some(FAULT_EXIT), "indexer {i}: {status}");
            deaths += 1;
            std::thread::sleep(Duration::from_millis(SESSION_MS + 1000));
            indexer.start();
        } else if armed[i] {
            let status = indexer.terminate();
            assert!(status.success(), "indexer {i} stopped with {status}");
            indexer.start();
        }
    }
    cluster.wait_for_split();
    cluster.wait_for_count_via_within(budget, &collector, total);
    let held: Vec<u64> = (0..INDEXERS).map(|i| cluster.local_count(i)).collect();
    assert_eq!(held.iter().sum::<u64>(), total, "own shards: {held:?}");
    let logged = (0..INDEXERS)
        .map(|i| rolled_back_in_logs(&cluster.indexers[i].root))
        .sum::<usize>();
    eprintln!(
        "chaos: {total} lines, {deaths} deaths ({restarts_armed} restarts armed to die in the window), \
         {logged} rollbacks logged, {transient_overcounts} over-counts gone half a second later, \
         own shards {held:?}, {:?}",
        started.elapsed()
    );
}

/// Rollbacks an indexer logged over all its starts.
fn rolled_back_in_logs(root: &Path) -> usize {
    std::fs::read_dir(root)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".stderr"))
        .map(|e| {
            std::fs::read_to_string(e.path())
                .unwrap_or_default()
                .matches("partition rolled back")
                .count()
        })
        .sum()
}
