use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use super::*;

fn opts(segment_bytes: u64) -> WalOptions {
    WalOptions { segment_bytes }
}

/// Deterministic xorshift64*, so failures reproduce without extra deps.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn payload(seed: u64, len: usize) -> Vec<u8> {
    let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    (0..len).map(|_| rng.next() as u8).collect()
}

fn read_all(wal: &Wal, from: Position) -> Vec<Record> {
    wal.read_from(from)
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap()
}

fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "wal"))
        .collect();
    v.sort();
    v
}

/// Appends `payloads`, returning `(start, end)` per record, and checks the
/// contiguity rule: each record starts at the previous end, or 8 bytes later
/// when it opened a new segment.
fn append_all(wal: &mut Wal, payloads: &[Vec<u8>]) -> Vec<(Position, Position)> {
    let mut out = Vec::new();
    for p in payloads {
        let before_end = wal.end_position();
        let segs_before = wal.segments().len();
        let start = wal.append(p).unwrap();
        if wal.segments().len() == segs_before {
            assert_eq!(start, before_end);
        } else {
            assert_eq!(start, before_end + MAGIC_LEN);
            assert_eq!(*wal.segments().last().unwrap(), before_end);
        }
        let end = start + 8 + p.len() as u64;
        assert_eq!(wal.end_position(), end);
        out.push((start, end));
    }
    out
}

fn check_suffixes(wal: &Wal, payloads: &[Vec<u8>], spans: &[(Position, Position)]) {
    for i in 0..payloads.len() {
        for from in [spans[i].0, if i > 0 { spans[i - 1].1 } else { spans[i].0 }] {
            let got = read_all(wal, from);
            assert_eq!(got.len(), payloads.len() - i, "from {from}");
            for (j, r) in got.iter().enumerate() {
                assert_eq!(r.payload, payloads[i + j]);
                assert_eq!((r.start, r.end), spans[i + j]);
            }
        }
    }
    let end = spans.last().map_or(wal.start_position(), |s| s.1);
    assert_eq!(wal.end_position(), expected_end(wal, end));
    assert!(read_all(wal, end).is_empty());
    assert!(read_all(wal, wal.end_position()).is_empty());
}

/// A log whose last record ends exactly where an empty active segment
/// begins has its end just past that segment's header.
fn expected_end(wal: &Wal, last_record_end: Position) -> Position {
    if wal.active_base() == last_record_end {
        last_record_end + MAGIC_LEN
    } else {
        last_record_end
    }
}

#[test]
fn round_trip_across_segment_rolls() {
    let dir = tempfile::tempdir().unwrap();
    let payloads: Vec<Vec<u8>> = (0..40)
        .map(|i| payload(i, 1 + (i as usize * 7) % 50))
        .collect();
    let spans = {
        let mut wal = Wal::open(dir.path(), opts(128)).unwrap();
        assert_eq!(wal.start_position(), 8);
        let spans = append_all(&mut wal, &payloads);
        wal.sync().unwrap();
        check_suffixes(&wal, &payloads, &spans);
        spans
    };
    assert!(segment_files(dir.path()).len() >= 5);
    for f in segment_files(dir.path()) {
        assert!(fs::metadata(&f).unwrap().len() <= 128);
    }

    let wal = Wal::open(dir.path(), opts(128)).unwrap();
    assert_eq!(wal.start_position(), 8);
    check_suffixes(&wal, &payloads, &spans);
    // A segment's base is the same boundary as its first record.
    for &base in &wal.segments()[1..] {
        let a = read_all(&wal, base);
        let b = read_all(&wal, base + 8);
        assert_eq!(a, b);
        assert_eq!(a[0].start, base + 8);
    }
    assert!(matches!(
        wal.read_from(wal.segments()[1] + 3),
        Err(WalError::NotRecordBoundary { .. })
    ));
    assert!(matches!(
        wal.read_from(wal.end_position() + 1),
        Err(WalError::PositionPastEnd { .. })
    ));
}

#[test]
fn oversized_record_gets_its_own_segment() {
    let dir = tempfile::tempdir().unwrap();
    let mut wal = Wal::open(dir.path(), opts(64)).unwrap();
    // Goes into the empty first segment even though it exceeds the limit.
    let big = payload(1, 500);
    assert_eq!(wal.append(&big).unwrap(), 8);
    let small = payload(2, 3);
    assert_eq!(wal.append(&small).unwrap(), 8 + 508 + 8);
    wal.sync().unwrap();
    assert_eq!(wal.segments(), vec![0, 516]);
    let got = read_all(&wal, 0);
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].payload, big);
    assert_eq!(got[1].payload, small);
}

#[test]
fn roll_now_lets_every_written_record_be_deleted_once_indexed() {
    let dir = tempfile::tempdir().unwrap();
    let mut wal = Wal::open(dir.path(), WalOptions::default()).unwrap();
    assert!(!wal.roll_now().unwrap(), "an empty segment is not rolled");
    wal.append(&payload(1, 100)).unwrap();
    wal.sync().unwrap();
    let indexed = wal.end_position();
    assert_eq!(wal.remove_segments_before(indexed).unwrap(), 0, "active");
    assert!(wal.roll_now().unwrap());
    assert!(!wal.roll_now().unwrap(), "the new segment is empty");
    assert_eq!(wal.remove_segments_before(indexed).unwrap(), 1);
    assert_eq!(segment_files(dir.path()).len(), 1);
    let later = wal.append(&payload(2, 10)).unwrap();
    wal.sync().unwrap();
    assert_eq!(read_all(&wal, later).len(), 1);
    drop(wal);
    let wal = Wal::open(dir.path(), WalOptions::default()).unwrap();
    assert_eq!(read_all(&wal, later)[0].payload, payload(2, 10));
}

#[test]
fn empty_wal() {
    let dir = tempfile::tempdir().unwrap();
    let wal_dir = dir.path().join("nested").join("wal");
    let wal = Wal::open(&wal_dir, WalOptions::default()).unwrap();
    assert_eq!(wal.start_position(), wal.end_position());
    assert_eq!(wal.end_position(), 8);
    assert!(read_all(&wal, wal.end_position()).is_empty());
    // An index that never committed stores 0: the first segment's base.
    assert!(read_all(&wal, 0).is_empty());
    drop(wal);
    let wal = Wal::open(&wal_dir, WalOptions::default()).unwrap();
    assert_eq!(wal.end_position(), 8);
    assert_eq!(segment_files(&wal_dir).len(), 1);
}

#[test]
fn unsynced_records_are_not_visible_to_readers() {
    let dir = tempfile::tempdir().unwrap();
    let mut wal = Wal::open(dir.path(), opts(64)).unwrap();
    let a = wal.append(b"durable").unwrap();
    wal.sync().unwrap();
    let synced = wal.end_position();
    for i in 0..10 {
        wal.append(&payload(i, 30)).unwrap();
    }
    assert_eq!(read_all(&wal, a).len(), 1);
    assert!(read_all(&wal, synced).is_empty());
    assert!(matches!(
        wal.read_from(wal.end_position()),
        Err(WalError::PositionPastEnd { .. })
    ));
    wal.sync().unwrap();
    assert_eq!(read_all(&wal, a).len(), 11);
}

fn last_segment(dir: &Path) -> PathBuf {
    segment_files(dir).pop().unwrap()
}

/// Writes 12 records over a few segments, damages the last segment with
/// `damage(path, last_record_start_offset_in_file)`, and checks that reopening
/// keeps exactly `expect_kept` records, then appends and reads back.
fn torn_tail_case(damage: impl FnOnce(&Path, u64), expect_kept: usize) {
    let dir = tempfile::tempdir().unwrap();
    let payloads: Vec<Vec<u8>> = (0..12).map(|i| payload(i, 20 + i as usize)).collect();
    let spans = {
        let mut wal = Wal::open(dir.path(), opts(100)).unwrap();
        let spans = append_all(&mut wal, &payloads);
        wal.sync().unwrap();
        spans
    };
    let last_base = *Wal::open(dir.path(), opts(100))
        .unwrap()
        .segments()
        .last()
        .unwrap();
    damage(&last_segment(dir.path()), spans[11].0 - last_base);

    let mut wal = Wal::open(dir.path(), opts(100)).unwrap();
    let kept = &spans[..expect_kept];
    assert_eq!(
        wal.end_position(),
        expected_end(&wal, kept.last().unwrap().1)
    );
    check_suffixes(&wal, &payloads[..expect_kept], kept);

    let extra: Vec<Vec<u8>> = (100..110).map(|i| payload(i, 15)).collect();
    let extra_spans = append_all(&mut wal, &extra);
    wal.sync().unwrap();
    drop(wal);
    let wal = Wal::open(dir.path(), opts(100)).unwrap();
    let all: Vec<Vec<u8>> = payloads[..expect_kept]
        .iter()
        .chain(&extra)
        .cloned()
        .collect();
    let all_spans: Vec<_> = kept.iter().chain(&extra_spans).copied().collect();
    check_suffixes(&wal, &all, &all_spans);
}

fn truncate_to(path: &Path, len: u64) {
    OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap()
        .set_len(len)
        .unwrap();
}

fn append_bytes(path: &Path, bytes: &[u8]) {
    OpenOptions::new()
        .append(true)
        .open(path)
        .unwrap()
        .write_all(bytes)
        .unwrap();
}

#[test]
fn torn_tail_mid_payload() {
    torn_tail_case(|p, last| truncate_to(p, last + 8 + 5), 11);
}

#[test]
fn torn_tail_mid_header() {
    torn_tail_case(|p, last| truncate_to(p, last + 3), 11);
}

#[test]
fn torn_tail_crc_mismatch() {
    torn_tail_case(
        |p, last| {
            let mut bytes = fs::read(p).unwrap();
            bytes[last as usize + 10] ^= 0x40;
            fs::write(p, bytes).unwrap();
        },
        11,
    );
}

#[test]
fn torn_tail_zero_fill() {
    torn_tail_case(|p, _| append_bytes(p, &[0u8; 4096]), 12);
}

#[test]
fn torn_tail_garbage() {
    torn_tail_case(|p, _| append_bytes(p, &payload(7, 333)), 12);
    // A plausible header whose payload never made it to disk.
    torn_tail_case(
        |p, _| {
            let mut rec = FORMAT.frame_header(b"abcdef").to_vec();
            rec.extend_from_slice(b"abc");
            append_bytes(p, &rec);
        },
        12,
    );
}

#[test]
fn torn_segment_header_is_reinitialised() {
    let dir = tempfile::tempdir().unwrap();
    let mut wal = Wal::open(dir.path(), opts(64)).unwrap();
    let payloads: Vec<Vec<u8>> = (0..3).map(|i| payload(i, 40)).collect();
    let spans = append_all(&mut wal, &payloads);
    wal.sync().unwrap();
    drop(wal);
    // A crash right after rolling: the next segment exists but its header
    // is partly written, or it is zero-filled.
    let next = spans[2].1;
    for contents in [&b"NOW"[..], &[0u8; 100][..], &[][..]] {
        fs::write(segment_path(dir.path(), next), contents).unwrap();
        let mut wal = Wal::open(dir.path(), opts(64)).unwrap();
        assert_eq!(wal.end_position(), next + 8);
        let got: Vec<Bytes> = read_all(&wal, 0).into_iter().map(|r| r.payload).collect();
        assert_eq!(got, payloads);
        assert_eq!(read_all(&wal, spans[2].1), read_all(&wal, next + 8));
        assert_eq!(read_all(&wal, next).len(), 0);
        let p = wal.append(b"after").unwrap();
        assert_eq!(p, next + 8);
        wal.sync().unwrap();
        assert_eq!(read_all(&wal, spans[2].0).len(), 2);
        drop(wal);
        fs::remove_file(segment_path(dir.path(), next)).unwrap();
    }
}

#[test]
fn bad_magic_is_an_error_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let mut wal = Wal::open(dir.path(), opts(64)).unwrap();
    for i in 0..4 {
        wal.append(&payload(i, 40)).unwrap();
    }
    wal.sync().unwrap();
    drop(wal);
    for victim in [
        segment_files(dir.path())[1].clone(),
        last_segment(dir.path()),
    ] {
        let original = fs::read(&victim).unwrap();
        let mut bytes = original.clone();
        bytes[..8].copy_from_slice(b"NOTAWAL!");
        fs::write(&victim, &bytes).unwrap();
        let err = Wal::open(dir.path(), opts(64)).unwrap_err();
        assert!(matches!(&err, WalError::BadMagic { path } if *path == victim));
        assert!(err.to_string().contains(&*victim.to_string_lossy()));
        fs::write(&victim, original).unwrap();
    }
    // Unknown files are ignored.
    fs::write(dir.path().join("README"), b"x").unwrap();
    fs::write(dir.path().join("00000000000000000001.wal.tmp"), b"x").unwrap();
    fs::create_dir(dir.path().join("sub")).unwrap();
    let wal = Wal::open(dir.path(), opts(64)).unwrap();
    assert_eq!(read_all(&wal, 0).len(), 4);
}

#[test]
fn crc_corruption_in_old_segment_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let mut wal = Wal::open(dir.path(), opts(100)).unwrap();
    let payloads: Vec<Vec<u8>> = (0..12).map(|i| payload(i, 30)).collect();
    let spans = append_all(&mut wal, &payloads);
    wal.sync().unwrap();
    drop(wal);

    let victim = segment_files(dir.path())[1].clone();
    let victim_base = FORMAT
        .parse_name(victim.file_name().unwrap().to_str().unwrap())
        .unwrap();
    let mut bytes = fs::read(&victim).unwrap();
    // Second record of the segment, inside its payload.
    let rec_offset = 8 + 8 + 30;
    bytes[rec_offset + 8 + 5] ^= 1;
    fs::write(&victim, bytes).unwrap();

    // Only the last segment is scanned at open, so this still opens.
    let wal = Wal::open(dir.path(), opts(100)).unwrap();
    let mut reader = wal.read_from(0).unwrap();
    let before: Vec<Record> = reader
        .by_ref()
        .take_while(|r| r.is_ok())
        .map(Result::unwrap)
        .collect();
    let corrupt_pos = victim_base + rec_offset as u64;
    assert_eq!(before.last().unwrap().end, corrupt_pos);
    assert!(reader.next().is_none());

    let err = wal.read_from(0).unwrap().find_map(Result::err).unwrap();
    match &err {
        WalError::Corrupt {
            path,
            offset,
            position,
            reason,
        } => {
            assert_eq!(path, &victim);
            assert_eq!(*offset, rec_offset as u64);
            assert_eq!(*position, corrupt_pos);
            assert!(reason.contains("CRC"), "{reason}");
        }
        other => panic!("unexpected error {other}"),
    }
    let msg = err.to_string();
    assert!(
        msg.contains(&*victim.to_string_lossy()) && msg.contains(&rec_offset.to_string()),
        "{msg}"
    );

    // Reading past the damage is unaffected.
    let after = spans.iter().position(|s| s.0 > corrupt_pos).unwrap();
    assert_eq!(read_all(&wal, spans[after].0).len(), 12 - after);
}

#[test]
fn truncated_old_segment_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let mut wal = Wal::open(dir.path(), opts(100)).unwrap();
    for i in 0..12 {
        wal.append(&payload(i, 30)).unwrap();
    }
    wal.sync().unwrap();
    drop(wal);
    let victim = segment_files(dir.path())[0].clone();
    let len = fs::metadata(&victim).unwrap().len();
    truncate_to(&victim, len - 4);
    let wal = Wal::open(dir.path(), opts(100)).unwrap();
    let results: Vec<_> = wal.read_from(0).unwrap().collect();
    assert!(results[0].is_ok());
    assert!(
        matches!(results.last().unwrap(), Err(WalError::Corrupt { path, .. }) if *path == victim)
    );
}

#[test]
fn remove_segments_before_removes_only_covered_segments() {
    let dir = tempfile::tempdir().unwrap();
    let mut wal = Wal::open(dir.path(), opts(100)).unwrap();
    let payloads: Vec<Vec<u8>> = (0..20).map(|i| payload(i, 30)).collect();
    let spans = append_all(&mut wal, &payloads);
    wal.sync().unwrap();
    let bases = wal.segments().to_vec();
    assert!(bases.len() >= 5);

    // Inside segment 1: nothing below is fully covered except segment 0.
    assert_eq!(wal.remove_segments_before(bases[1] - 1).unwrap(), 0);
    assert_eq!(wal.remove_segments_before(bases[1]).unwrap(), 1);
    assert_eq!(wal.start_position(), bases[1] + 8);
    assert!(!segment_path(dir.path(), bases[0]).exists());
    assert_eq!(wal.remove_segments_before(bases[2] + 8).unwrap(), 1);
    assert_eq!(wal.remove_segments_before(bases[3] + 20).unwrap(), 1);
    assert_eq!(wal.start_position(), bases[3] + 8);
    assert_eq!(segment_files(dir.path()).len(), bases.len() - 3);

    let err = wal.read_from(bases[3] - 1).unwrap_err();
    assert!(
        matches!(&err, WalError::PositionGone { position, first_segment }
        if *position == bases[3] - 1 && *first_segment == segment_path(dir.path(), bases[3]))
    );
    // The end of the last removed segment is still a valid replay point.
    let first_kept = spans.iter().position(|s| s.0 == bases[3] + 8).unwrap();
    assert_eq!(read_all(&wal, bases[3]).len(), 20 - first_kept);
    check_suffixes(&wal, &payloads[first_kept..], &spans[first_kept..]);

    // The active segment is never removed.
    let active = *bases.last().unwrap();
    assert_eq!(
        wal.remove_segments_before(u64::MAX).unwrap(),
        bases.len() - 4
    );
    assert_eq!(wal.segments(), vec![active]);
    assert_eq!(
        segment_files(dir.path()),
        vec![segment_path(dir.path(), active)]
    );
    drop(wal);

    let mut wal = Wal::open(dir.path(), opts(100)).unwrap();
    assert_eq!(wal.start_position(), active + 8);
    assert_eq!(wal.end_position(), spans[19].1);
    let p = wal.append(b"more").unwrap();
    wal.sync().unwrap();
    assert_eq!(read_all(&wal, p)[0].payload, &b"more"[..]);
}

#[test]
fn second_open_is_refused_while_locked() {
    let dir = tempfile::tempdir().unwrap();
    let wal = Wal::open(dir.path(), WalOptions::default()).unwrap();
    assert!(matches!(
        Wal::open(dir.path(), WalOptions::default()),
        Err(WalError::Locked { .. })
    ));
    drop(wal);
    Wal::open(dir.path(), WalOptions::default()).unwrap();
}

#[test]
fn empty_payload_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let mut wal = Wal::open(dir.path(), WalOptions::default()).unwrap();
    assert!(matches!(
        wal.append(b""),
        Err(WalError::EmptyPayload { .. })
    ));
    // Not a write failure, so the log stays usable.
    wal.append(b"x").unwrap();
    wal.sync().unwrap();
}

/// Random sizes (some over the segment limit), random sync points, random
/// reopen-with-torn-tail, checked against an in-memory model.
#[test]
fn randomized_against_model() {
    for seed in 1..=5u64 {
        let dir = tempfile::tempdir().unwrap();
        let mut rng = Rng(seed);
        let seg = 256 + rng.below(2048);
        let mut model: Vec<(Position, Position, Vec<u8>)> = Vec::new();
        let mut durable = 0;
        let mut wal = Wal::open(dir.path(), opts(seg)).unwrap();
        for step in 0..400u64 {
            match rng.below(100) {
                0..=79 => {
                    let len = match rng.below(10) {
                        0 => 1 + rng.below(3 * seg) as usize,
                        _ => 1 + rng.below(seg / 4) as usize,
                    };
                    let p = payload(seed * 1_000_000 + step, len);
                    let start = wal.append(&p).unwrap();
                    let expected = model.last().map_or(8, |m| m.1);
                    assert!(start == expected || start == expected + 8);
                    model.push((start, start + 8 + len as u64, p));
                }
                80..=91 => {
                    wal.sync().unwrap();
                    durable = model.len();
                }
                92..=95 => {
                    // Simulated crash: unsynced data may be partly on disk,
                    // so tear the last segment at a random point past the
                    // durable prefix.
                    wal.sync().unwrap();
                    drop(wal);
                    let last = last_segment(dir.path());
                    let base = FORMAT
                        .parse_name(last.file_name().unwrap().to_str().unwrap())
                        .unwrap();
                    let durable_end = model[..durable].last().map_or(8, |m| m.1);
                    let min = durable_end.saturating_sub(base).max(8);
                    let len = fs::metadata(&last).unwrap().len();
                    let cut = min + rng.below(len - min + 1);
                    truncate_to(&last, cut);
                    wal = Wal::open(dir.path(), opts(seg)).unwrap();
                    model.retain(|m| m.1 <= wal.end_position());
                    assert!(model.len() >= durable);
                    durable = model.len();
                }
                _ => {
                    wal.sync().unwrap();
                    durable = model.len();
                    if !model.is_empty() {
                        let i = rng.below(model.len() as u64) as usize;
                        let got = read_all(&wal, model[i].0);
                        assert_eq!(got.len(), model.len() - i);
                        for (r, m) in got.iter().zip(&model[i..]) {
                            assert_eq!((r.start, r.end, &r.payload[..]), (m.0, m.1, &m.2[..]));
                        }
                    }
                }
            }
        }
        wal.sync().unwrap();
        drop(wal);
        let wal = Wal::open(dir.path(), opts(seg)).unwrap();
        let got = read_all(&wal, 0);
        assert_eq!(got.len(), model.len(), "seed {seed}");
        for (r, m) in got.iter().zip(&model) {
            assert_eq!((r.start, r.end, &r.payload[..]), (m.0, m.1, &m.2[..]));
        }
        assert!(segment_files(dir.path()).len() > 1, "seed {seed}");
    }
}

#[test]
fn a_log_created_at_a_position_continues_from_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let wal_dir = dir.path().join("wal");
    Wal::create_at(&wal_dir, 4096).expect("create");
    let mut wal = Wal::open(&wal_dir, WalOptions::default()).expect("open");
    // The position a restored checkpoint names reads as the empty start.
    assert_eq!(wal.read_from(4096).expect("read").count(), 0);
    let at = wal.append(b"after the restore").expect("append");
    assert_eq!(at, 4096 + 8);
    wal.sync().expect("sync");
    let records: Vec<_> = wal.read_from(4096).expect("read").collect();
    assert_eq!(records.len(), 1);
    assert!(
        Wal::create_at(&wal_dir, 0).is_err(),
        "never over an existing log"
    );
}
