//! Independent units of a training (the folds of a cross-fit, the fold assignments of a
//! cross-validation) spread over the machine's cores: scoped threads, no pool and no
//! global state. The results are those of a sequential map, in order, whatever the core
//! count, so training stays deterministic.

/// `work` of every item, in item order. One thread per core (at most one per item); on one
/// core, or for one item, a plain map.
pub(crate) fn map_in_parallel<I: Sync, T: Send>(
    items: &[I],
    work: impl Fn(&I) -> T + Sync,
) -> Vec<T> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let threads = cores.min(items.len());
    if threads <= 1 {
        return items.iter().map(work).collect();
    }
    let work = &work;
    let mut results: Vec<(usize, T)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                scope.spawn(move || {
                    let mine = items.iter().enumerate().skip(t).step_by(threads);
                    mine.map(|(k, item)| (k, work(item))).collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            // A panic in a unit is the caller's panic, as in a sequential map.
            .flat_map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
            .collect()
    });
    results.sort_by_key(|(k, _)| *k);
    results.into_iter().map(|(_, r)| r).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_results_are_a_sequential_map_in_order() {
        let items: Vec<u64> = (0..37).collect();
        let out = map_in_parallel(&items, |&i| i * i + 1);
        assert_eq!(out, items.iter().map(|i| i * i + 1).collect::<Vec<_>>());
        assert!(map_in_parallel(&[] as &[u64], |&i| i).is_empty());
        assert_eq!(map_in_parallel(&[5u64], |&i| i), vec![5]);
    }
}
