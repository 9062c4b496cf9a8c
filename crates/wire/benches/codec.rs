//! Codec micro-benchmarks, side by side with rust-postgres's `postgres-protocol`:
//!
//! - `frame_split`: split a realistic result stream (RowDescription + 100k DataRows +
//!   CommandComplete + ReadyForQuery) into frames;
//! - `typed_decode`: split and decode it into typed messages, touching every column;
//! - `encode_bind_execute`: encode 1000 Bind/Execute/Sync batches.
//!
//! Copying the stream into a fresh `BytesMut` is setup, not measured. After criterion's
//! report, each pair is timed again in-process (median of interleaved runs) and the ratio
//! printed.

use std::hint::black_box;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use criterion::{BatchSize, Criterion};
use fallible_iterator::FallibleIterator;
use pgbastion_wire::frontend::{write_bind, write_execute, write_sync};
use pgbastion_wire::*;
use postgres_protocol::message::backend::Message;

const ROWS: usize = 100_000;
const BATCHES: usize = 1000;
const LIMIT: usize = limits::PQ_LARGE_MESSAGE_LIMIT;

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
    let fields = vec![
        field("id", 23, 4),
        field("note", 25, -1),
        field("at", 1184, 8),
    ];
    let messages = [
        BackendMessage::RowDescription { fields },
        BackendMessage::CommandComplete {
            tag: format!("SELECT {ROWS}"),
        },
        BackendMessage::ReadyForQuery(TransactionStatus::Idle),
    ];
    messages[0].encode(&mut buf).expect("encode");
    for i in 0..ROWS {
        let id = (10_000 + i).to_string();
        let row = [
            Some(id.as_bytes()),
            Some(&b"some text value here"[..]),
            Some(&b"2024-01-01 00:00:00+00"[..]),
        ];
        data_row::write_data_row(&mut buf, row).expect("encode");
    }
    messages[1].encode(&mut buf).expect("encode");
    messages[2].encode(&mut buf).expect("encode");
    buf.freeze()
}

fn fresh(stream: &Bytes) -> BytesMut {
    BytesMut::from(&stream[..])
}

/// Splits owned frames off the buffer (the gateway/relay read path).
fn split_pgbastion(mut buf: BytesMut) -> usize {
    let decoder = FrameDecoder::new(LIMIT);
    let mut n = 0;
    while let Some(frame) = decoder.decode(&mut buf).expect("valid stream") {
        black_box(frame.tag);
        n += 1;
    }
    n
}

/// Walks borrowed frames (a relay peeking at tags before forwarding the run of bytes).
fn split_pgbastion_raw(buf: BytesMut) -> usize {
    let mut frames = RawFrames::new(&buf, LIMIT);
    let mut n = 0;
    for frame in frames.by_ref() {
        black_box(frame.expect("valid stream").tag);
        n += 1;
    }
    assert_eq!(frames.consumed(), buf.len());
    n
}

fn split_postgres_protocol(mut buf: BytesMut) -> usize {
    let mut n = 0;
    while let Some(message) = Message::parse(&mut buf).expect("valid stream") {
        black_box(&message);
        n += 1;
    }
    n
}

fn typed_pgbastion(mut buf: BytesMut) -> usize {
    let decoder = FrameDecoder::new(LIMIT);
    let mut total = 0;
    while let Some(frame) = decoder.decode(&mut buf).expect("valid stream") {
        if let BackendMessage::DataRow(row) = BackendMessage::try_from(frame).expect("valid") {
            total += row
                .values()
                .map(|v| v.map_or(0, <[u8]>::len))
                .sum::<usize>();
        }
    }
    total
}

fn typed_postgres_protocol(mut buf: BytesMut) -> usize {
    let mut total = 0;
    while let Some(message) = Message::parse(&mut buf).expect("valid stream") {
        if let Message::DataRow(row) = message {
            let mut ranges = row.ranges();
            while let Some(range) = ranges.next().expect("valid row") {
                total += range.map_or(0, |r| row.buffer()[r].len());
            }
        }
    }
    total
}

const PARAMS: [Option<&[u8]>; 3] = [Some(b"42"), Some(b"alice"), None];

fn encode_pgbastion(buf: &mut BytesMut) {
    buf.clear();
    for _ in 0..BATCHES {
        write_bind(buf, "", "s1", &[0], PARAMS, &[0]).expect("encode");
        write_execute(buf, "", 0).expect("encode");
        write_sync(buf).expect("encode");
    }
}

fn encode_pgbastion_enum(buf: &mut BytesMut, batch: &[FrontendMessage]) {
    buf.clear();
    for _ in 0..BATCHES {
        for message in batch {
            message.encode(buf).expect("encode");
        }
    }
}

fn encode_postgres_protocol(buf: &mut BytesMut) {
    use postgres_protocol::message::frontend;
    use postgres_protocol::IsNull;
    buf.clear();
    for _ in 0..BATCHES {
        let bound = frontend::bind(
            "",
            "s1",
            [0i16],
            PARAMS,
            |p, buf| match p {
                Some(v) => {
                    buf.extend_from_slice(v);
                    Ok::<_, Box<dyn std::error::Error + Sync + Send>>(IsNull::No)
                }
                None => Ok(IsNull::Yes),
            },
            [0i16],
            buf,
        );
        assert!(bound.is_ok());
        frontend::execute("", 0, buf).expect("encode");
        frontend::sync(buf);
    }
}

fn bind_execute_sync() -> Vec<FrontendMessage> {
    vec![
        FrontendMessage::Bind {
            portal: String::new(),
            statement: "s1".into(),
            param_formats: vec![0],
            params: PARAMS.iter().map(|p| p.map(Bytes::from_static)).collect(),
            result_formats: vec![0],
        },
        FrontendMessage::Execute {
            portal: String::new(),
            max_rows: 0,
        },
        FrontendMessage::Sync,
    ]
}

fn check_equivalence(stream: &Bytes) {
    let frames = split_postgres_protocol(fresh(stream));
    assert_eq!(frames, ROWS + 3);
    assert_eq!(split_pgbastion(fresh(stream)), frames);
    assert_eq!(split_pgbastion_raw(fresh(stream)), frames);
    assert_eq!(
        typed_pgbastion(fresh(stream)),
        typed_postgres_protocol(fresh(stream))
    );
    let (mut ours, mut theirs, mut via_enum) = (BytesMut::new(), BytesMut::new(), BytesMut::new());
    encode_pgbastion(&mut ours);
    encode_postgres_protocol(&mut theirs);
    encode_pgbastion_enum(&mut via_enum, &bind_execute_sync());
    assert_eq!(ours, theirs);
    assert_eq!(ours, via_enum);
}

fn benches(c: &mut Criterion) {
    let stream = result_stream();
    check_equivalence(&stream);
    let input = || fresh(&stream);

    let mut group = c.benchmark_group("frame_split");
    group.bench_function("pgbastion", |b| {
        b.iter_batched(input, split_pgbastion, BatchSize::LargeInput)
    });
    group.bench_function("pgbastion-raw", |b| {
        b.iter_batched(input, split_pgbastion_raw, BatchSize::LargeInput)
    });
    group.bench_function("postgres-protocol", |b| {
        b.iter_batched(input, split_postgres_protocol, BatchSize::LargeInput)
    });
    group.finish();

    let mut group = c.benchmark_group("typed_decode");
    group.bench_function("pgbastion", |b| {
        b.iter_batched(input, typed_pgbastion, BatchSize::LargeInput)
    });
    group.bench_function("postgres-protocol", |b| {
        b.iter_batched(input, typed_postgres_protocol, BatchSize::LargeInput)
    });
    group.finish();

    let mut group = c.benchmark_group("encode_bind_execute");
    let mut buf = BytesMut::with_capacity(64 * 1024);
    let batch = bind_execute_sync();
    group.bench_function("pgbastion", |b| b.iter(|| encode_pgbastion(&mut buf)));
    group.bench_function("pgbastion-enum", |b| {
        b.iter(|| encode_pgbastion_enum(&mut buf, &batch))
    });
    group.bench_function("postgres-protocol", |b| {
        b.iter(|| encode_postgres_protocol(&mut buf))
    });
    group.finish();
}

const RUNS: usize = 15;

/// Median times of `ours` and `theirs` over interleaved runs, each on a fresh copy of
/// `stream` made outside the timed region.
fn median_pair(
    stream: &Bytes,
    ours: impl Fn(BytesMut) -> usize,
    theirs: impl Fn(BytesMut) -> usize,
) -> (Duration, Duration) {
    let time = |f: &dyn Fn(BytesMut) -> usize| {
        let buf = fresh(stream);
        let start = Instant::now();
        black_box(f(buf));
        start.elapsed()
    };
    let (mut a, mut b): (Vec<_>, Vec<_>) = (0..RUNS).map(|_| (time(&ours), time(&theirs))).unzip();
    a.sort();
    b.sort();
    (a[RUNS / 2], b[RUNS / 2])
}

fn print_ratio(label: &str, what: &str, (ours, theirs): (Duration, Duration)) {
    let ratio = theirs.as_secs_f64() / ours.as_secs_f64();
    let verdict = if ratio >= 1.0 {
        format!("{ratio:.2}x faster than")
    } else {
        format!("{:.2}x slower than", 1.0 / ratio)
    };
    println!("ratio {label}: pgbastion ({ours:.2?}) is {verdict} postgres-protocol {what} ({theirs:.2?})");
}

fn main() {
    let mut criterion = Criterion::default().configure_from_args();
    benches(&mut criterion);
    criterion.final_summary();

    let stream = result_stream();
    print_ratio(
        "frame_split (FrameDecoder)",
        "Message::parse",
        median_pair(&stream, split_pgbastion, split_postgres_protocol),
    );
    print_ratio(
        "frame_split (RawFrames)",
        "Message::parse",
        median_pair(&stream, split_pgbastion_raw, split_postgres_protocol),
    );
    print_ratio(
        "typed_decode",
        "Message::parse + DataRowBody::ranges",
        median_pair(&stream, typed_pgbastion, typed_postgres_protocol),
    );
    let mut buf = BytesMut::with_capacity(64 * 1024);
    let batch = bind_execute_sync();
    let mut encode = |f: &mut dyn FnMut(&mut BytesMut)| {
        let mut times: Vec<_> = (0..RUNS)
            .map(|_| {
                let start = Instant::now();
                f(&mut buf);
                start.elapsed()
            })
            .collect();
        times.sort();
        times[RUNS / 2]
    };
    let theirs = encode(&mut |b| encode_postgres_protocol(b));
    let ours = encode(&mut |b| encode_pgbastion(b));
    let via_enum = encode(&mut |b| encode_pgbastion_enum(b, &batch));
    print_ratio(
        "encode_bind_execute (write_*)",
        "frontend::bind+execute+sync",
        (ours, theirs),
    );
    print_ratio(
        "encode_bind_execute (FrontendMessage::encode)",
        "frontend::bind+execute+sync",
        (via_enum, theirs),
    );
}
