//! The first read of a queue file, as the daemon does it for every
//! message it brings into the active queue: open, then read the envelope
//! and the recipients (`read_message`). The file is a small one of the
//! kind cleanup writes for a message submitted over SMTP, with 1 and with
//! 10 recipients; it stays in the page cache, so this measures the
//! system calls and the parsing, not the disk.

use std::fs::File;
use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use rqmgr_queue::message::{read_opened_message, ReadLimits};
use rqmgr_queue::writer::QueueFileBuilder;

fn queue_file(recipients: usize) -> Vec<u8> {
    let mut b = QueueFileBuilder::new(1_700_000_000, 0);
    b.sender("sender@example.com").full_name("Benchmark");
    for i in 0..recipients {
        b.recipient(format!("user{i}@example.net"));
    }
    b.body(
        [
            "Received: from client.example (localhost [127.0.0.1])",
            "\tby test.localdomain (Postfix) with ESMTP id 4ABCDEF",
            "Message-Id: <1700000000.bench@test.localdomain>",
            "From: Benchmark <sender@example.com>",
            "Subject: a small message",
            "",
            "A few lines of body text, as in most mail.",
            "Nothing in it matters to the queue manager.",
        ]
        .iter(),
    );
    b.build()
}

fn read(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temporary directory");
    let limits = ReadLimits::default();
    for recipients in [1, 10] {
        let path = dir.path().join(format!("file{recipients}"));
        std::fs::write(&path, queue_file(recipients)).expect("write queue file");
        c.bench_function(&format!("open and read, {recipients} recipient(s)"), |b| {
            b.iter(|| {
                let mut file = File::open(&path).expect("open");
                black_box(read_opened_message(&mut file, &limits).expect("read"))
            });
        });
    }
}

criterion_group!(benches, read);
criterion_main!(benches);
