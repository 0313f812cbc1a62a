//! Writes a realistic nginx combined access log for side-by-side benches:
//! `cargo run --release --example gen_access_log -- OUT LINES`.
//! Event time advances one second per 500 lines, from 2026-01-01.

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
        file.write_all(nightowl::bench::generate_lines(&mut rng, n, start + second).as_bytes())?;
        written += n;
        second += 1;
    }
    file.flush()?;
    Ok(())
}
