use std::fs::{self, OpenOptions};
use std::path::{Path, PathBuf};

use super::frame::read_frame;
use super::*;

/// Written through, little-endian (like neither owner exactly, on purpose).
static THROUGH: Format = Format {
    name: "test",
    magic: b"TESTLOG1",
    suffix: ".seg",
    big_endian: false,
    max_payload: 1000,
    write_buffer: 0,
    read_buffer: 64,
};

/// Buffered, big-endian.
static BUFFERED: Format = Format {
    name: "test",
    magic: b"TESTLOG2",
    suffix: ".seg",
    big_endian: true,
    max_payload: 1000,
    write_buffer: 4096,
    read_buffer: 4096,
};

fn payload(i: u64, len: usize) -> Vec<u8> {
    (0..len).map(|j| (i as usize * 31 + j) as u8 | 1).collect()
}

/// Every durable frame from `from`, as `(start, payload)`, walking the
/// segments the way an owner that knows them does.
fn read_all(log: &SegLog, format: &'static Format, from: u64) -> Vec<(u64, Vec<u8>)> {
    let segments = log.segments();
    let limit = log.synced_end();
    let mut out = Vec::new();
    for (i, &base) in segments.iter().enumerate() {
        let seg_end = segments.get(i + 1).copied().unwrap_or(limit);
        if seg_end <= from {
            continue;
        }
        let mut reader = SegmentReader::open(format, log.dir(), base, from).expect("open segment");
        while reader.position() < seg_end {
            let mut p = Vec::new();
            let start = reader.read(seg_end, &mut p).expect("read");
            out.push((start, p));
        }
    }
    out
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir)
        .expect("list")
        .map(|e| e.expect("entry").path())
        .collect();
    v.sort();
    v
}

fn set_len(path: &Path, len: u64) {
    OpenOptions::new()
        .write(true)
        .open(path)
        .expect("open")
        .set_len(len)
        .expect("truncate");
}

#[test]
fn segment_names() {
    assert_eq!(THROUGH.parse_name("00000000000000000042.seg"), Some(42));
    assert_eq!(THROUGH.parse_name("42.seg"), None);
    assert_eq!(THROUGH.parse_name("0000000000000000004x.seg"), None);
    assert_eq!(THROUGH.parse_name("00000000000000000042.seg.tmp"), None);
    assert_eq!(THROUGH.parse_name("99999999999999999999.seg"), None);
    assert_eq!(THROUGH.parse_name("00000000000000000042.wal"), None);
    let p = THROUGH.segment_path(Path::new("/d"), 7);
    assert_eq!(p, Path::new("/d/00000000000000000007.seg"));
}

#[test]
fn frame_headers_follow_the_formats_byte_order() {
    let le = THROUGH.frame_header(b"hello");
    let be = BUFFERED.frame_header(b"hello");
    let crc = crc32fast::hash(b"hello");
    assert_eq!(le[..4], 5u32.to_le_bytes());
    assert_eq!(le[4..], crc.to_le_bytes());
    assert_eq!(be[..4], 5u32.to_be_bytes());
    assert_eq!(be[4..], crc.to_be_bytes());
    let mut framed = vec![0u8; 8];
    framed.extend_from_slice(b"hello");
    BUFFERED.finish_frame(&mut framed);
    assert_eq!(framed[..8], be);
}

#[test]
fn frame_defects() {
    let mut rec = THROUGH.frame_header(b"hello").to_vec();
    rec.extend_from_slice(b"hello");
    let mut buf = Vec::new();
    let n = rec.len() as u64;
    let read = |bytes: &[u8], available: u64, buf: &mut Vec<u8>| {
        read_frame(&THROUGH, &mut &bytes[..], available, buf).expect("no I/O error")
    };
    assert_eq!(read(&rec, n, &mut buf), Ok(13));
    assert_eq!(buf, b"hello");
    assert_eq!(
        read(&rec[..5], n, &mut buf),
        Err(Defect::ShortHeader { available: 5 })
    );
    assert_eq!(
        read(&rec[..10], n, &mut buf),
        Err(Defect::ShortPayload { len: 5, got: 2 })
    );
    assert_eq!(
        read(&rec, n - 1, &mut buf),
        Err(Defect::LengthPastEnd {
            len: 5,
            available: 4
        })
    );
    assert_eq!(read(&[0u8; 16], 16, &mut buf), Err(Defect::ZeroLength));
    let mut long = 1001u32.to_le_bytes().to_vec();
    long.extend_from_slice(&[0u8; 2000]);
    assert_eq!(
        read(&long, 2000, &mut buf),
        Err(Defect::TooLong {
            len: 1001,
            max: 1000
        })
    );
    let mut bad = rec.clone();
    bad[9] ^= 1;
    assert!(matches!(
        read(&bad, n, &mut buf),
        Err(Defect::CrcMismatch { .. })
    ));
    // The other byte order reads this length as something else entirely.
    assert!(read_frame(&BUFFERED, &mut &rec[..], n, &mut buf)
        .expect("no I/O error")
        .is_err());
}

#[test]
fn segments_roll_and_whole_segments_are_deleted() {
    for format in [&THROUGH, &BUFFERED] {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut log = SegLog::open(dir.path(), format).expect("open").log;
        assert_eq!((log.segments(), log.end()), (&[0][..], 8));
        let a = log.append(&payload(1, 20)).expect("append");
        assert_eq!(a, 8);
        log.roll().expect("roll");
        // The new segment starts at the old end; its first frame after its header.
        assert_eq!(log.segments(), &[0, 36][..]);
        let b = log.append(&payload(2, 10)).expect("append");
        assert_eq!(b, 36 + 8);
        log.roll().expect("roll");
        let c = log.append(&payload(3, 5)).expect("append");
        assert_eq!(log.sync().expect("sync"), c + 8 + 5);
        assert_eq!(
            files(dir.path()),
            vec![
                format.segment_path(dir.path(), 0),
                format.segment_path(dir.path(), 36),
                format.segment_path(dir.path(), 62),
            ]
        );
        assert_eq!(
            read_all(&log, format, 0),
            vec![(a, payload(1, 20)), (b, payload(2, 10)), (c, payload(3, 5))]
        );

        // Only segments wholly below the position go, oldest first.
        assert_eq!(log.remove_before(61).expect("remove"), 1);
        assert_eq!(log.segments(), &[36, 62][..]);
        assert!(!format.segment_path(dir.path(), 0).exists());
        // The active segment stays, however far the position.
        assert_eq!(log.remove_before(u64::MAX).expect("remove"), 1);
        assert_eq!(log.segments(), &[62][..]);
        assert_eq!(files(dir.path()), vec![format.segment_path(dir.path(), 62)]);
        drop(log);

        let again = SegLog::open(dir.path(), format).expect("reopen");
        assert_eq!(again.torn_bytes, 0);
        assert_eq!((again.log.segments(), again.log.end()), (&[62][..], c + 13));
        assert_eq!(read_all(&again.log, format, c), vec![(c, payload(3, 5))]);
    }
}

#[test]
fn a_torn_tail_is_repaired_and_appends_continue() {
    for format in [&THROUGH, &BUFFERED] {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut log = SegLog::open(dir.path(), format).expect("open").log;
        log.append(&payload(1, 30)).expect("append");
        log.roll().expect("roll");
        let kept = log.append(&payload(2, 30)).expect("append");
        let torn = log.append(&payload(3, 30)).expect("append");
        let file_end = log.sync().expect("sync");
        drop(log);
        // A crash mid-append: the last frame's payload is cut short.
        let last = format.segment_path(dir.path(), 46);
        set_len(&last, torn - 46 + 8 + 11);

        let opened = SegLog::open(dir.path(), format).expect("reopen");
        assert_eq!(opened.torn_bytes, 19);
        assert_eq!(opened.log.end(), torn);
        assert_eq!(fs::metadata(&last).expect("meta").len(), torn - 46);
        let mut log = opened.log;
        let again = log.append(&payload(4, 30)).expect("append");
        assert_eq!(again, torn);
        assert_eq!(log.sync().expect("sync"), file_end);
        let got: Vec<Vec<u8>> = read_all(&log, format, 0).into_iter().map(|r| r.1).collect();
        assert_eq!(got, vec![payload(1, 30), payload(2, 30), payload(4, 30)]);
        assert_eq!(read_all(&log, format, kept).len(), 2);
    }
}

#[test]
fn a_last_segment_without_its_header_is_reinitialised() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = SegLog::open(dir.path(), &THROUGH).expect("open").log;
    log.append(&payload(1, 40)).expect("append");
    log.sync().expect("sync");
    drop(log);
    // A crash right after a roll: the new segment is empty, half a header,
    // or zero-filled.
    let next = THROUGH.segment_path(dir.path(), 56);
    for contents in [&b""[..], &b"TEST"[..], &[0u8; 300][..]] {
        fs::write(&next, contents).expect("write");
        let opened = SegLog::open(dir.path(), &THROUGH).expect("reopen");
        assert_eq!(opened.torn_bytes, contents.len() as u64);
        assert_eq!(opened.log.end(), 56 + 8);
        assert_eq!(fs::read(&next).expect("read"), THROUGH.magic);
        assert_eq!(read_all(&opened.log, &THROUGH, 0).len(), 1);
        drop(opened);
        fs::remove_file(&next).expect("remove");
    }
    // A header that is there but wrong was not written by a crash.
    fs::write(&next, b"SOMETHING ELSE").expect("write");
    let err = SegLog::open(dir.path(), &THROUGH).expect_err("bad magic");
    assert!(
        matches!(&err, Error::BadMagic { path, .. } if *path == next),
        "{err}"
    );
    assert!(err.to_string().contains("TESTLOG1"), "{err}");
}

/// Three segments of two frames; the second frame of the middle segment
/// gets a flipped payload byte. Returns the dir, that segment's path and
/// the frame's offset in it.
fn crc_damaged_middle_segment(format: &'static Format) -> (tempfile::TempDir, PathBuf, u64) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = SegLog::open(dir.path(), format).expect("open").log;
    for i in 0..6 {
        if i > 0 && i % 2 == 0 {
            log.roll().expect("roll");
        }
        log.append(&payload(i, 20)).expect("append");
    }
    log.sync().expect("sync");
    let middle = log.segments()[1];
    drop(log);
    let path = format.segment_path(dir.path(), middle);
    let mut bytes = fs::read(&path).expect("read");
    let offset = 8 + 28;
    bytes[offset + 8 + 3] ^= 0x40;
    fs::write(&path, bytes).expect("write");
    (dir, path, offset as u64)
}

#[test]
fn a_crc_mismatch_is_an_error_naming_the_file_and_offset() {
    let (dir, victim, offset) = crc_damaged_middle_segment(&THROUGH);
    let base = 64;
    assert_eq!(victim, THROUGH.segment_path(dir.path(), base));

    // Opening reads only the last segment, so this opens; reading meets it.
    let log = SegLog::open(dir.path(), &THROUGH).expect("open").log;
    let mut reader = SegmentReader::open(&THROUGH, dir.path(), base, base).expect("open segment");
    let mut p = Vec::new();
    assert_eq!(
        reader.read(base + 64, &mut p).expect("first frame"),
        base + 8
    );
    let err = reader.read(base + 64, &mut p).expect_err("damaged frame");
    match &err {
        Error::Corrupt {
            path,
            offset: at,
            position,
            reason,
        } => {
            assert_eq!(path, &victim);
            assert_eq!(*at, offset);
            assert_eq!(*position, base + offset);
            assert!(reason.contains("CRC mismatch"), "{reason}");
        }
        other => panic!("unexpected error {other}"),
    }
    let msg = err.to_string();
    assert!(
        msg.contains(&*victim.to_string_lossy()) && msg.contains(&format!("byte offset {offset}")),
        "{msg}"
    );
    drop(log);

    // An owner reading every frame at open gets the same error, and nothing
    // is cut: the damage is not in the last segment.
    let before = fs::read(&victim).expect("read");
    let err = SegLog::open_reading_every(dir.path(), &THROUGH, |_| Ok::<_, Error>(true))
        .expect_err("damage in an older segment");
    assert!(
        matches!(&err, Error::Corrupt { path, offset: at, .. } if *path == victim && *at == offset),
        "{err}"
    );
    assert_eq!(fs::read(&victim).expect("read"), before);
}

#[test]
fn a_crc_mismatch_in_the_last_segment_is_a_torn_tail() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = SegLog::open(dir.path(), &BUFFERED).expect("open").log;
    let kept = log.append(&payload(1, 20)).expect("append");
    let torn = log.append(&payload(2, 20)).expect("append");
    log.sync().expect("sync");
    drop(log);
    let path = BUFFERED.segment_path(dir.path(), 0);
    let mut bytes = fs::read(&path).expect("read");
    bytes[torn as usize + 8 + 1] ^= 1;
    fs::write(&path, bytes).expect("write");
    let opened = SegLog::open(dir.path(), &BUFFERED).expect("reopen");
    assert_eq!((opened.log.end(), opened.torn_bytes), (torn, 28));
    assert_eq!(
        read_all(&opened.log, &BUFFERED, 0),
        vec![(kept, payload(1, 20))]
    );
}

#[test]
fn reading_every_frame_visits_them_in_order_and_checks_contiguity() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = SegLog::open(dir.path(), &THROUGH).expect("open").log;
    let mut written = Vec::new();
    for i in 0..5 {
        if i == 2 || i == 4 {
            log.roll().expect("roll");
        }
        let p = payload(i, 10 + i as usize);
        written.push((log.append(&p).expect("append"), p));
    }
    log.sync().expect("sync");
    let bases = log.segments().to_vec();
    drop(log);

    let mut seen = Vec::new();
    let opened = SegLog::open_reading_every(dir.path(), &THROUGH, |f: Frame<'_>| {
        assert_eq!(f.path, THROUGH.segment_path(dir.path(), f.base));
        seen.push((f.base + f.offset, std::mem::take(f.payload)));
        Ok::<_, Error>(true)
    })
    .expect("open");
    assert_eq!(seen, written);
    drop(opened);

    // A visitor that refuses the last frame: cut like a torn tail.
    let last = written[4].0;
    let opened = SegLog::open_reading_every(dir.path(), &THROUGH, |f: Frame<'_>| {
        Ok::<_, Error>(f.base + f.offset != last)
    })
    .expect("open");
    assert_eq!((opened.log.end(), opened.torn_bytes), (last, 8 + 14));
    drop(opened);

    // A missing middle segment leaves a gap only a full read can see.
    fs::remove_file(THROUGH.segment_path(dir.path(), bases[1])).expect("remove");
    SegLog::open(dir.path(), &THROUGH).expect("headers alone look fine");
    let err = SegLog::open_reading_every(dir.path(), &THROUGH, |_| Ok::<_, Error>(true))
        .expect_err("gap");
    assert!(
        matches!(&err, Error::Corrupt { path, .. } if *path == THROUGH.segment_path(dir.path(), bases[2])),
        "{err}"
    );
    assert!(
        err.to_string().contains(&format!("ends at {}", bases[1])),
        "{err}"
    );
}

#[test]
fn written_through_appends_reach_the_file_before_sync_buffered_ones_do_not() {
    for (format, visible) in [(&THROUGH, true), (&BUFFERED, false)] {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut log = SegLog::open(dir.path(), format).expect("open").log;
        let mut frame = vec![0u8; 8];
        frame.extend_from_slice(b"in place");
        format.finish_frame(&mut frame);
        assert_eq!(log.append_frame(&frame).expect("append"), 8);
        let path = format.segment_path(dir.path(), 0);
        let on_disk = fs::metadata(&path).expect("meta").len();
        assert_eq!(
            on_disk == 8 + 16,
            visible,
            "{}",
            format.magic.escape_ascii()
        );
        assert_eq!(log.synced_end(), 8);
        assert_eq!(log.sync().expect("sync"), 24);
        assert_eq!(read_all(&log, format, 0), vec![(8, b"in place".to_vec())]);
    }
}

#[test]
fn payload_limits_and_the_lock() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = SegLog::open(dir.path(), &THROUGH).expect("open").log;
    assert!(matches!(log.append(b""), Err(Error::EmptyPayload { .. })));
    assert!(matches!(
        log.append(&[1u8; 1001]),
        Err(Error::PayloadTooLarge { len: 1001, .. })
    ));
    assert!(matches!(
        log.append_frame(&[0u8; 8]),
        Err(Error::EmptyPayload { .. })
    ));
    assert_eq!(log.end(), 8, "nothing was written");
    assert!(matches!(
        SegLog::open(dir.path(), &THROUGH),
        Err(Error::Locked { .. })
    ));
    drop(log);
    SegLog::open(dir.path(), &THROUGH).expect("unlocked");
}

#[test]
fn a_log_created_at_a_base_starts_there_and_only_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sub = dir.path().join("new").join("log");
    SegLog::create_at(&sub, &THROUGH, 4096).expect("create");
    let mut log = SegLog::open(&sub, &THROUGH).expect("open").log;
    assert_eq!(log.append(b"x").expect("append"), 4096 + 8);
    drop(log);
    assert!(matches!(
        SegLog::create_at(&sub, &THROUGH, 0),
        Err(Error::Corrupt { .. })
    ));
}
