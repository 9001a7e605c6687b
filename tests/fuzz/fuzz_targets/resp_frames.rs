//! Fuzz target `resp`: arbitrary bytes as the replies a Redis server sends on
//! the near cache's connection, through its RESP parser (`src/cache/resp.rs`).
//!
//! A hostile or broken server must never make the parser panic, overflow the
//! stack or allocate what a declared length asks for (scripts/fuzz.sh caps
//! each allocation), and a socket may deliver the bytes cut anywhere: read
//! in pieces, as the connection reads them, the wire must give the same
//! frames, then the same error or the same bytes left waiting, as read
//! whole.
//!
//! The input's first byte chooses the pieces' sizes; the rest is the wire.
#![no_main]

use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Mutex, OnceLock};
use std::thread;

use libfuzzer_sys::fuzz_target;
use warehouse_monitor::cache::resp_parser::{Frame, parse};

/// The stack the parser gets here. The connection parses on a tokio worker
/// (2 MiB of stack); a smaller one here makes recursion that grows with the
/// input show up at the input sizes libFuzzer tries (4 KiB), while the
/// nesting the parser allows fits many times over.
const STACK: usize = 256 << 10;

fuzz_target!(|input: &[u8]| {
    let Some((&seed, wire)) = input.split_first() else {
        return;
    };
    let parser = parser().lock().expect("not poisoned");
    parser
        .jobs
        .send((seed, wire.to_vec()))
        .expect("parser alive");
    parser.done.recv().expect("parser alive");
});

/// The thread with the small stack that checks each input, started once (a
/// thread per input would halve the executions per second). A panic there
/// aborts the process, as in the fuzz target itself.
struct Parser {
    jobs: SyncSender<(u8, Vec<u8>)>,
    done: Receiver<()>,
}

fn parser() -> &'static Mutex<Parser> {
    static PARSER: OnceLock<Mutex<Parser>> = OnceLock::new();
    PARSER.get_or_init(|| {
        let (jobs, inbox) = sync_channel::<(u8, Vec<u8>)>(0);
        let (finished, done) = sync_channel(0);
        thread::Builder::new()
            .name("resp-parser".into())
            .stack_size(STACK)
            .spawn(move || {
                for (seed, wire) in inbox {
                    check(seed, &wire);
                    finished.send(()).expect("fuzz target alive");
                }
            })
            .expect("a thread");
        Mutex::new(Parser { jobs, done })
    })
}

fn check(seed: u8, wire: &[u8]) {
    let whole = read(wire, std::iter::once(wire.len()));
    let pieces = read(wire, sizes(seed));
    assert_eq!(whole, pieces, "read whole and in pieces differ");
}

/// What the connection makes of a stream of bytes.
#[derive(Debug, PartialEq)]
struct Reading {
    frames: Vec<Frame>,
    end: End,
}

#[derive(Debug, PartialEq)]
enum End {
    /// No error; this many bytes wait for the rest of their frame.
    Waiting(usize),
    /// The protocol error that ends the connection.
    Error(String),
}

/// Reads `wire` in pieces of the given sizes as the connection does: after
/// each piece, every whole frame at the start of the buffer is taken out.
fn read(wire: &[u8], sizes: impl Iterator<Item = usize>) -> Reading {
    let mut buffer = Vec::new();
    let mut frames = Vec::new();
    let mut rest = wire;
    for size in sizes {
        if rest.is_empty() {
            break;
        }
        let (piece, after) = rest.split_at(size.clamp(1, rest.len()));
        rest = after;
        buffer.extend_from_slice(piece);
        loop {
            match parse(&buffer) {
                Ok(Some((frame, used))) => {
                    assert!(used > 0 && used <= buffer.len(), "used {used}");
                    frames.push(frame);
                    buffer.drain(..used);
                }
                Ok(None) => break,
                Err(error) => {
                    return Reading {
                        frames,
                        end: End::Error(error),
                    };
                }
            }
        }
    }
    assert!(rest.is_empty(), "sizes ran out");
    Reading {
        frames,
        end: End::Waiting(buffer.len()),
    }
}

/// Endless piece sizes drawn from `seed`: up to 1, 2, 4 ... 128 bytes each
/// (its low three bits), varying with a small xorshift generator.
fn sizes(seed: u8) -> impl Iterator<Item = usize> {
    let max = 1_u32 << (seed & 7);
    let mut state = u32::from(seed) | 0x9e37_7900;
    std::iter::from_fn(move || {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        Some(1 + (state % max) as usize)
    })
}
