//! Owns the `depends_on` graph between Apps: cycle detection and a deterministic sync order.
//!
//! Both functions assume every `depends_on` name exists (validated before they are called) and
//! skip unknown names rather than panic.

use super::App;
use std::collections::HashMap;

fn index(apps: &[App]) -> HashMap<&str, usize> {
    apps.iter()
        .enumerate()
        .map(|(i, app)| (app.name.as_str(), i))
        .collect()
}

/// The first cycle found walking Apps in file order, as names with the first repeated at the
/// end (`[a, b, a]`); a self-dependency is `[a, a]`.
pub(super) fn find_cycle(apps: &[App]) -> Option<Vec<String>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        OnStack,
        Done,
    }
    let by_name = index(apps);
    let mut marks = vec![Mark::New; apps.len()];
    // Iterative DFS: a deep chain of Apps must not overflow the stack. Each frame is an App and
    // the position of the next dependency to visit.
    for root in 0..apps.len() {
        if marks[root] != Mark::New {
            continue;
        }
        let mut stack: Vec<(usize, usize)> = vec![(root, 0)];
        marks[root] = Mark::OnStack;
        while let Some(&mut (node, ref mut next)) = stack.last_mut() {
            let deps = &apps[node].depends_on;
            if *next == deps.len() {
                marks[node] = Mark::Done;
                stack.pop();
                continue;
            }
            let dep_name = deps[*next].as_str();
            *next += 1;
            let Some(&dep) = by_name.get(dep_name) else {
                continue;
            };
            match marks[dep] {
                Mark::New => {
                    marks[dep] = Mark::OnStack;
                    stack.push((dep, 0));
                }
                Mark::OnStack => {
                    let start = stack.iter().position(|&(n, _)| n == dep).unwrap_or(0);
                    let mut cycle: Vec<String> = stack[start..]
                        .iter()
                        .map(|&(n, _)| apps[n].name.clone())
                        .collect();
                    cycle.push(apps[dep].name.clone());
                    return Some(cycle);
                }
                Mark::Done => {}
            }
        }
    }
    None
}

/// Indexes into `apps` such that dependencies come first; among Apps whose dependencies are
/// all placed, file order decides. Apps on a cycle (rejected at load) are appended last.
pub(super) fn topological_order(apps: &[App]) -> Vec<usize> {
    let by_name = index(apps);
    let mut placed = vec![false; apps.len()];
    let mut order = Vec::with_capacity(apps.len());
    // Quadratic, but configs hold tens to hundreds of Apps and it keeps file order for ties
    // without a priority queue.
    loop {
        let ready = (0..apps.len()).find(|&i| {
            !placed[i]
                && apps[i]
                    .depends_on
                    .iter()
                    .filter_map(|d| by_name.get(d.as_str()))
                    .all(|&d| placed[d])
        });
        match ready {
            Some(i) => {
                placed[i] = true;
                order.push(i);
            }
            None => break,
        }
    }
    order.extend((0..apps.len()).filter(|&i| !placed[i]));
    order
}
