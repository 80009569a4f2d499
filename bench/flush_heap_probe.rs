// Appended to src/modules/tracking/pipeline.rs by bench/flush-heap, in a temporary copy: not part
// of the build. One flush the size bench/run's mixed load makes at 100 000 adverts.

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod flush_heap_probe {
    use super::*;
    use crate::domain::targeting::{Country, Device};
    use crate::platform::events::EventSettings;

    /// Each round counts an impression of every one of 100 000 adverts (its first creative), a
    /// click on every second one, and a placement's impression with its second creative on every
    /// fourth one, by a viewer of a known device and country: 175 000 keys and 50 000 device and
    /// country shares. The counts are pushed to the journal every 400 adverts (a push every 10 ms
    /// carries a few hundred keys under the mixed load), then flushed into SQLite. The first
    /// round's flush finds every row new; the later ones add to rows that exist, as a running
    /// process's do.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "run under valgrind's massif by bench/flush-heap"]
    async fn a_flush_at_100_000_adverts() {
        let (_db_dir, db) = Db::temporary();
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::open(dir.path(), false).unwrap();
        // No broker and no webhooks: no `stats.flushed` events, as in bench/run.
        let outbox = Outbox::new(&EventSettings {
            amqp_url: String::new(),
            exchange: "reklama".into(),
            clicks: false,
            retention_hours: 1,
            publish_timeout_ms: 1_000,
            poll_interval_ms: 1_000,
        });
        let settings = PipelineSettings {
            push_interval: Duration::from_millis(10),
            flush_interval: Duration::from_secs(3600),
            flush_threshold: u64::MAX,
            journal_warn_bytes: u64::MAX,
            outbox,
        };
        let pipeline = CounterPipeline::new(db, journal, None, settings);
        let placement: PlacementName = Arc::from("medium_rectangle");
        let viewer = Viewer {
            device: Some(Device::parse("mobile").unwrap()),
            country: Country::known("DE"),
        };
        let rounds: usize = std::env::var("FLUSH_HEAP_ROUNDS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(3);
        for round in 1..=rounds {
            for i in 0..100_000 {
                let advert = AdvertId(i);
                let first = Some(CreativeId(1));
                pipeline.record(advert, None, first, Viewer::default(), Metric::Impression);
                if i % 2 == 0 {
                    pipeline.record(advert, None, None, Viewer::default(), Metric::Click);
                }
                if i % 4 == 0 {
                    let second = Some(CreativeId(2));
                    pipeline.record(advert, Some(&placement), second, viewer, Metric::Impression);
                }
                if i % 400 == 0 {
                    pipeline.push().await;
                }
            }
            pipeline.push().await;
            pipeline.flush(Reach::BestEffort).await.unwrap();
            eprintln!("flush {round} of {rounds} done");
        }
    }
}
