//! Closing batches: a batch is the records that arrived until it holds `size`
//! of them or `wait` has passed since its first record, whichever comes first.
//! Kept apart from fetching so that the timing rule is tested with a paused clock.

use std::time::Duration;

use tokio::sync::mpsc;

use crate::batch::Record;

/// Waits for the next batch, in offset order; `None` once the channel is
/// closed and empty. A closed channel also ends a partly filled batch, which
/// is returned first.
pub async fn next_batch(
    rx: &mut mpsc::Receiver<Record>,
    size: usize,
    wait: Duration,
) -> Option<Vec<Record>> {
    // Until the first record, wait as long as it takes.
    let mut batch = vec![rx.recv().await?];
    let deadline = tokio::time::Instant::now() + wait;
    while batch.len() < size {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(r)) => batch.push(r),
            Err(_) | Ok(None) => break, // deadline passed, or the fetcher is gone
        }
    }
    Some(batch)
}

#[cfg(test)]
mod tests {
    use time::OffsetDateTime;

    use super::*;

    fn record(offset: i64) -> Record {
        Record {
            offset,
            timestamp: OffsetDateTime::UNIX_EPOCH,
            value: None,
        }
    }

    fn offsets(batch: &[Record]) -> Vec<i64> {
        batch.iter().map(|r| r.offset).collect()
    }

    #[tokio::test(start_paused = true)]
    async fn closes_at_size_without_waiting() {
        let (tx, mut rx) = mpsc::channel(16);
        for i in 0..5 {
            tx.send(record(i)).await.unwrap();
        }
        let start = tokio::time::Instant::now();
        let batch = next_batch(&mut rx, 3, Duration::from_secs(60))
            .await
            .unwrap();
        assert_eq!(offsets(&batch), vec![0, 1, 2]);
        assert_eq!(start.elapsed(), Duration::ZERO);
        let batch = next_batch(&mut rx, 3, Duration::from_secs(60));
        drop(tx);
        assert_eq!(offsets(&batch.await.unwrap()), vec![3, 4]);
    }

    #[tokio::test(start_paused = true)]
    async fn closes_after_wait_counted_from_the_first_record() {
        let (tx, mut rx) = mpsc::channel(16);
        let producer = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(500)).await;
            tx.send(record(0)).await.unwrap();
            tokio::time::sleep(Duration::from_millis(150)).await;
            tx.send(record(1)).await.unwrap();
            tokio::time::sleep(Duration::from_millis(100)).await;
            tx.send(record(2)).await.unwrap();
            tx
        });
        let start = tokio::time::Instant::now();
        let batch = next_batch(&mut rx, 100, Duration::from_millis(200))
            .await
            .unwrap();
        // First record at 500 ms, deadline 700 ms: record 1 (650 ms) is in, record 2 (750 ms) is not.
        assert_eq!(offsets(&batch), vec![0, 1]);
        assert_eq!(start.elapsed(), Duration::from_millis(700));
        let batch = next_batch(&mut rx, 100, Duration::from_millis(200))
            .await
            .unwrap();
        assert_eq!(offsets(&batch), vec![2]);
        drop(producer.await.unwrap());
        assert!(
            next_batch(&mut rx, 100, Duration::from_millis(200))
                .await
                .is_none()
        );
    }
}
