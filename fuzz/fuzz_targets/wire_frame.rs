//! Agent ↔ collector frames (`transport::protocol::ProtocolCodec`) from
//! untrusted bytes. Beyond not panicking:
//! - every decoded message re-encodes to the bytes it was decoded from
//!   (up to the canonical spellings the decoder accepts: any non-zero Ack
//!   flag byte, bytes after an Error's message);
//! - decoding the re-encoded frame gives the same message back;
//! - feeding the input in two chunks decodes the same messages and the
//!   same error as feeding it at once (the partial-frame path is correct);
//! - a `BatchZstd` payload never decompresses past the limit, and what it
//!   decompresses to survives a compress/decompress round trip.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use nightowl::transport::protocol::{compress_lines, decompress_lines, Message, ProtocolCodec};
use tokio_util::codec::{Decoder, Encoder};

/// Small enough that the decoder's `reserve` of a whole frame stays cheap.
const MAX_FRAME: usize = 1 << 20;
const MAX_LINES: usize = 1 << 20;

/// Decodes until the codec wants more bytes or fails.
fn drain(
    codec: &mut ProtocolCodec,
    buf: &mut BytesMut,
    out: &mut Vec<(Message, Vec<u8>)>,
) -> Result<(), String> {
    loop {
        let before = buf.clone();
        match codec.decode(buf) {
            Ok(Some(msg)) => {
                let used = before.len() - buf.len();
                out.push((msg, before[..used].to_vec()));
            }
            Ok(None) => {
                assert_eq!(&before[..], &buf[..], "Ok(None) must not consume input");
                return Ok(());
            }
            Err(e) => return Err(e.to_string()),
        }
    }
}

fn check_round_trip(msg: &Message, wire: &[u8]) {
    let mut codec = ProtocolCodec::new(MAX_FRAME);
    let mut again = BytesMut::new();
    codec
        .encode(msg.clone(), &mut again)
        .expect("a decoded message must re-encode");
    let body = &wire[4..];
    let rebody = &again[4..];
    match msg {
        // The decoder stops after the message string and ignores the rest.
        Message::Error { .. } => assert!(body.starts_with(rebody), "{msg:?}"),
        // Any non-zero flag byte reads as `duplicate: true`, written as 1.
        Message::Ack { duplicate, .. } => {
            assert_eq!(body.len(), rebody.len());
            assert_eq!(body[..body.len() - 1], rebody[..rebody.len() - 1]);
            assert_eq!(body[body.len() - 1] != 0, *duplicate);
        }
        _ => assert_eq!(body, rebody, "{msg:?}"),
    }
    let back = codec
        .decode(&mut again)
        .expect("re-encoded frame decodes")
        .expect("re-encoded frame is whole");
    assert_eq!(&back, msg);
    assert!(again.is_empty());

    if let Message::BatchZstd(b) = msg {
        if let Ok(lines) = decompress_lines(&b.lines, MAX_LINES) {
            assert!(lines.len() <= MAX_LINES);
            let packed = compress_lines(&lines).expect("compress");
            let unpacked = decompress_lines(&packed, MAX_LINES).expect("own frame decompresses");
            assert_eq!(unpacked, lines);
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let mut whole = Vec::new();
    let mut codec = ProtocolCodec::new(MAX_FRAME);
    let mut buf = BytesMut::from(data);
    let whole_result = drain(&mut codec, &mut buf, &mut whole);
    for (msg, wire) in &whole {
        check_round_trip(msg, wire);
    }

    // The same bytes in two reads, split where the first byte says.
    let split = data.first().map_or(0, |&b| b as usize % (data.len() + 1));
    let mut chunked = Vec::new();
    let mut codec = ProtocolCodec::new(MAX_FRAME);
    let mut buf = BytesMut::from(&data[..split]);
    let mut chunked_result = drain(&mut codec, &mut buf, &mut chunked);
    if chunked_result.is_ok() {
        buf.extend_from_slice(&data[split..]);
        chunked_result = drain(&mut codec, &mut buf, &mut chunked);
    }
    assert_eq!(whole, chunked);
    assert_eq!(whole_result, chunked_result);
});
