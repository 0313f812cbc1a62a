//! Syslog over TLS framing (`transport::syslog::FrameCodec`, RFC 5425
//! octet counting or newline-terminated) and the token extraction applied
//! to each message. Beyond not panicking:
//! - a frame never exceeds the limit, and is a contiguous slice of the input
//!   (octet-counted: exactly the counted bytes; newline: ends with `\n`);
//! - two-chunk delivery yields the same frames and error as one buffer;
//! - `take_token`'s token is a substring of the message and the rewritten
//!   message is the message minus one `[nightowl...]` element (plus `-`).
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use nightowl::transport::syslog::{take_token, FrameCodec};
use tokio_util::codec::Decoder;

/// Small, so that lines around the limit are within libFuzzer's input size.
const MAX: usize = 64;

fn drain(codec: &mut FrameCodec, buf: &mut BytesMut, out: &mut Vec<Vec<u8>>) -> Result<(), String> {
    loop {
        match codec.decode(buf) {
            Ok(Some(frame)) => out.push(frame.to_vec()),
            Ok(None) => return Ok(()),
            Err(e) => return Err(e.to_string()),
        }
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || hay.windows(needle.len()).any(|w| w == needle)
}

fuzz_target!(|data: &[u8]| {
    let mut codec = FrameCodec::new(MAX);
    let mut buf = BytesMut::from(data);
    let mut frames = Vec::new();
    let result = drain(&mut codec, &mut buf, &mut frames);

    for f in &frames {
        // A newline frame keeps its `\n`, so it may be one byte over.
        assert!(f.len() <= MAX + 1, "frame of {} bytes", f.len());
        assert!(contains(data, f));
        let (token, rest) = take_token(f);
        if let Some(t) = token {
            assert!(contains(f, t));
            assert!(!contains(t, b"\""));
            assert!(rest.len() < f.len());
        } else if !contains(f, b"[nightowl") {
            assert_eq!(&rest[..], &f[..]);
        }
    }

    let split = data.first().map_or(0, |&b| b as usize % (data.len() + 1));
    let mut codec = FrameCodec::new(MAX);
    let mut buf = BytesMut::from(&data[..split]);
    let mut chunked = Vec::new();
    let mut chunked_result = drain(&mut codec, &mut buf, &mut chunked);
    if chunked_result.is_ok() {
        buf.extend_from_slice(&data[split..]);
        chunked_result = drain(&mut codec, &mut buf, &mut chunked);
    }
    assert_eq!(frames, chunked);
    assert_eq!(result, chunked_result);
});
