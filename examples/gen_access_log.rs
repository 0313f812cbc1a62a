//! Writes a realistic nginx combined access log for side-by-side benches:
//! `cargo run --release --example gen_access_log -- OUT LINES`.
//! Event time advances one second per 500 lines, from 2026-01-01. Every
//! 100k lines one attacker IP makes 25 failed logins, so brute-force
//! detectors have something to find (10 per 1M lines).

use std::io::Write;

use rand::SeedableRng;

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let out = args.next().unwrap_or_else(|| "access.log".into());
    let lines: usize = match args.next() {
        Some(n) => n.parse()?,
        None => 1_000_000,
    };
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let mut file = std::io::BufWriter::new(std::fs::File::create(&out)?);
    let start = 1_767_225_600; // 2026-01-01T00:00:00Z
    let mut written = 0;
    let mut second = 0;
    while written < lines {
        let n = (lines - written).min(500);
        let at = start + second;
        file.write_all(nightowl::bench::generate_lines(&mut rng, n, at).as_bytes())?;
        written += n;
        second += 1;
        if written % 100_000 == 0 {
            let stamp = time::OffsetDateTime::from_unix_timestamp(at)?.format(
                &time::macros::format_description!(
                    "[day]/[month repr:short]/[year]:[hour]:[minute]:[second] +0000"
                ),
            )?;
            let attacker = written / 100_000;
            for _ in 0..25 {
                writeln!(
                    file,
                    "203.0.113.{attacker} - - [{stamp}] \"POST /login HTTP/1.1\" 401 512 \"-\" \"python-requests/2.31\""
                )?;
            }
        }
    }
    file.flush()?;
    Ok(())
}
