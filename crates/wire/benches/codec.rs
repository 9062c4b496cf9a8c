//! Codec micro-benchmarks, side by side with rust-postgres's `postgres-protocol`:
//!
//! - splitting a realistic result stream (RowDescription + 100k DataRows + CommandComplete +
//!   ReadyForQuery) into frames;
//! - decoding it into typed messages and touching every column;
//! - encoding 1000 Bind/Execute/Sync batches.
//!
//! After criterion's report, the ratios of each pair are printed from a median of repeated
//! timings taken in the same process, so they share the machine's state.

use std::hint::black_box;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, Criterion};
use fallible_iterator::FallibleIterator;
use pgbastion_wire::backend::FieldDescription;
use pgbastion_wire::*;
use postgres_protocol::message::backend::Message;

const ROWS: usize = 100_000;

fn result_stream() -> Bytes {
    let mut buf = BytesMut::new();
    let field = |name: &str, type_oid, type_size| FieldDescription {
        name: name.into(),
        table_oid: 16384,
        column_id: 1,
        type_oid,
        type_size,
        type_modifier: -1,
        format: 0,
    };
    BackendMessage::RowDescription {
        fields: vec![field("id", 23, 4), field("note", 25, -1), field("at", 1184, 8)],
    }
    .encode(&mut buf)
    .unwrap();
    for i in 0..ROWS {
        let id = (10_000 + i).to_string();
        let row = DataRow::new([
            Some(id.as_bytes()),
            Some(&b"some text value here"[..]),
            Some(&b"2024-01-01 00:00:00+00"[..]),
        ])
        .unwrap();
        BackendMessage::DataRow(row).encode(&mut buf).unwrap();
    }
    BackendMessage::CommandComplete {
        tag: format!("SELECT {ROWS}"),
    }
    .encode(&mut buf)
    .unwrap();
    BackendMessage::ReadyForQuery(TransactionStatus::Idle)
        .encode(&mut buf)
        .unwrap();
    buf.freeze()
}

fn split_raw(stream: &Bytes) -> usize {
    let mut frames = RawFrames::new(stream, limits::PQ_LARGE_MESSAGE_LIMIT);
    let n = frames.by_ref().filter(|f| f.is_ok()).count();
    assert_eq!(frames.consumed(), stream.len());
    n
}

fn split_owned(stream: &Bytes) -> usize {
    let mut buf = BytesMut::from(&stream[..]);
    let decoder = FrameDecoder::new(limits::PQ_LARGE_MESSAGE_LIMIT);
    let mut n = 0;
    while let Some(frame) = decoder.decode(&mut buf).unwrap() {
        black_box(frame.tag);
        n += 1;
    }
    n
}

fn pp_parse(stream: &Bytes) -> usize {
    let mut buf = BytesMut::from(&stream[..]);
    let mut n = 0;
    while let Some(message) = Message::parse(&mut buf).unwrap() {
        black_box(&message);
        n += 1;
    }
    n
}

fn typed_pgbastion(stream: &Bytes) -> usize {
    let mut buf = BytesMut::from(&stream[..]);
    let decoder = FrameDecoder::new(limits::PQ_LARGE_MESSAGE_LIMIT);
    let mut total = 0;
    while let Some(frame) = decoder.decode(&mut buf).unwrap() {
        if let BackendMessage::DataRow(row) = BackendMessage::decode(&frame).unwrap() {
            total += row.values().map(|v| v.map_or(0, <[u8]>::len)).sum::<usize>();
        }
    }
    total
}

fn typed_postgres_protocol(stream: &Bytes) -> usize {
    let mut buf = BytesMut::from(&stream[..]);
    let mut total = 0;
    while let Some(message) = Message::parse(&mut buf).unwrap() {
        if let Message::DataRow(row) = message {
            let mut ranges = row.ranges();
            while let Some(range) = ranges.next().unwrap() {
                total += range.map_or(0, |r| row.buffer()[r].len());
            }
        }
    }
    total
}

const BATCHES: usize = 1000;

fn encode_pgbastion(buf: &mut BytesMut) {
    buf.clear();
    let params = [
        Some(Bytes::from_static(b"42")),
        Some(Bytes::from_static(b"alice")),
        None,
    ];
    for _ in 0..BATCHES {
        FrontendMessage::Bind {
            portal: String::new(),
            statement: "s1".to_owned(),
            param_formats: vec![0],
            params: params.to_vec(),
            result_formats: vec![0],
        }
        .encode(buf)
        .unwrap();
        FrontendMessage::Execute {
            portal: String::new(),
            max_rows: 0,
        }
        .encode(buf)
        .unwrap();
        FrontendMessage::Sync.encode(buf).unwrap();
    }
}

fn encode_postgres_protocol(buf: &mut BytesMut) {
    use postgres_protocol::message::frontend;
    use postgres_protocol::IsNull;
    buf.clear();
    let params: [Option<&[u8]>; 3] = [Some(b"42"), Some(b"alice"), None];
    for _ in 0..BATCHES {
        frontend::bind(
            "",
            "s1",
            [0i16],
            params.iter(),
            |p, buf| match p {
                Some(v) => {
                    buf.extend_from_slice(v);
                    Ok(IsNull::No)
                }
                None => Ok(IsNull::Yes),
            },
            [0i16],
            buf,
        )
        .map_err(|_| ())
        .unwrap();
        frontend::execute("", 0, buf).unwrap();
        frontend::sync(buf);
    }
}

fn benches(c: &mut Criterion) {
    let stream = result_stream();
    assert_eq!(split_raw(&stream), pp_parse(&stream));
    assert_eq!(split_owned(&stream), pp_parse(&stream));
    assert_eq!(typed_pgbastion(&stream), typed_postgres_protocol(&stream));

    let mut group = c.benchmark_group("frame_split");
    group.bench_function("pgbastion RawFrames", |b| b.iter(|| split_raw(&stream)));
    group.bench_function("pgbastion FrameDecoder", |b| b.iter(|| split_owned(&stream)));
    group.bench_function("postgres-protocol Message::parse", |b| b.iter(|| pp_parse(&stream)));
    group.finish();

    let mut group = c.benchmark_group("typed_decode");
    group.bench_function("pgbastion", |b| b.iter(|| typed_pgbastion(&stream)));
    group.bench_function("postgres-protocol", |b| b.iter(|| typed_postgres_protocol(&stream)));
    group.finish();

    let mut group = c.benchmark_group("encode_bind_execute");
    let mut buf = BytesMut::with_capacity(64 * 1024);
    group.bench_function("pgbastion", |b| b.iter(|| encode_pgbastion(&mut buf)));
    group.bench_function("postgres-protocol", |b| {
        b.iter(|| encode_postgres_protocol(&mut buf))
    });
    group.finish();
}

criterion_group!(codec, benches);

/// Median wall time of `f` over `runs` runs.
fn median(runs: usize, mut f: impl FnMut()) -> Duration {
    let mut times: Vec<Duration> = (0..runs)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed()
        })
        .collect();
    times.sort();
    times[runs / 2]
}

fn ratio(label: &str, ours: Duration, theirs: Duration) {
    println!(
        "ratio {label}: pgbastion {:.2?} vs postgres-protocol {:.2?} -> {:.2}x",
        ours,
        theirs,
        theirs.as_secs_f64() / ours.as_secs_f64()
    );
}

fn main() {
    codec();
    criterion::Criterion::default()
        .configure_from_args()
        .final_summary();
    let stream = result_stream();
    let runs = 21;
    // Interleave the pairs so drift on a noisy machine hits both alike.
    let pp = median(runs, || {
        black_box(pp_parse(&stream));
    });
    let raw = median(runs, || {
        black_box(split_raw(&stream));
    });
    let owned = median(runs, || {
        black_box(split_owned(&stream));
    });
    ratio("frame_split (RawFrames, the relay path)", raw, pp);
    ratio("frame_split (FrameDecoder, owned frames)", owned, pp);
    let ours = median(runs, || {
        black_box(typed_pgbastion(&stream));
    });
    let theirs = median(runs, || {
        black_box(typed_postgres_protocol(&stream));
    });
    ratio("typed_decode", ours, theirs);
    let mut buf = BytesMut::with_capacity(64 * 1024);
    let ours = median(runs, || encode_pgbastion(&mut buf));
    let theirs = median(runs, || encode_postgres_protocol(&mut buf));
    ratio("encode_bind_execute", ours, theirs);
}
