//! A CP grid's `strategy_params`: which option sets each of its strategies runs. Two shapes, mixable:
//!
//! ```toml
//! strategy_params = { sharding = "zigzag" }          # every strategy of the grid that takes the key
//! [grid.strategy_params.usp]                           # (or `strategy_params = { usp = { … } }`)
//! ulysses_degree = [2, 4]                              # usp only; an array is a sweep
//! inner_ring = 2
//! ```
//!
//! A key directly under `strategy_params` goes to the grid's strategies that take it (see
//! `cp::strategy::StrategyDef::options`); one that none takes is bad input. A table named after one of
//! the grid's strategies gives that strategy's options (over the shared ones); a key the strategy does
//! not take is bad input. Arrays are swept: every combination is one case. A strategy never gets an
//! option it does not take, so such an option never changes its case id.

use std::collections::BTreeMap;

use super::schema::value_to_param;
use crate::case::CpOptions;
use crate::cp::registry::find_strategy;
use crate::mask::Params;

/// A problem with the table: the key (below `strategy_params`) and what is wrong.
pub type KeyError = (String, String);

/// The option sets of each strategy in `strategies` (in the order of the sweep; one default set when
/// the table says nothing for it).
pub fn expand(map: &BTreeMap<String, toml::Value>, strategies: &[String]) -> Result<BTreeMap<String, Vec<CpOptions>>, KeyError> {
    let takes = |strategy: &str, key: &str| find_strategy(strategy).map(|d| d.takes(key)).unwrap_or(key == "sharding");
    let mut shared: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    let mut own: BTreeMap<&str, BTreeMap<&str, Vec<String>>> = BTreeMap::new();
    for (k, v) in map {
        match v {
            toml::Value::Table(t) => {
                if !strategies.contains(k) {
                    return Err((k.clone(), format!("`{k}` is neither a strategy option ({}) nor a strategy of this grid", CpOptions::KEYS.join(", "))));
                }
                for (ok, ov) in t {
                    let key = format!("{k}.{ok}");
                    if !CpOptions::KEYS.contains(&ok.as_str()) {
                        return Err((key, format!("unknown strategy option `{ok}` (expected {})", CpOptions::KEYS.join(", "))));
                    }
                    if !takes(k, ok) {
                        let list = find_strategy(k).map(|d| d.takes_list()).unwrap_or_else(|_| "sharding".into());
                        return Err((key, format!("strategy `{k}` does not take `{ok}` (it takes: {list})")));
                    }
                    own.entry(k.as_str()).or_default().insert(ok.as_str(), values(&key, ov)?);
                }
            }
            other => {
                if !CpOptions::KEYS.contains(&k.as_str()) {
                    return Err((k.clone(), format!("unknown strategy option `{k}` (expected {}, or a table per strategy)", CpOptions::KEYS.join(", "))));
                }
                if !strategies.iter().any(|s| takes(s, k)) {
                    return Err((k.clone(), format!("none of this grid's strategies ({}) takes `{k}`", strategies.join(", "))));
                }
                shared.insert(k.as_str(), values(k, other)?);
            }
        }
    }
    let mut out = BTreeMap::new();
    for s in strategies {
        let mut keys: BTreeMap<&str, Vec<String>> = shared.iter().filter(|(k, _)| takes(s, k)).map(|(k, v)| (*k, v.clone())).collect();
        keys.extend(own.get(s.as_str()).cloned().unwrap_or_default());
        let mut sets = vec![Params::new()];
        for (k, vs) in &keys {
            sets = sets.iter().flat_map(|p| vs.iter().map(move |v| p.clone().set(k, v))).collect();
        }
        let opts = sets.iter().map(|p| CpOptions::from_params(p).map_err(|m| (s.clone(), m))).collect::<Result<Vec<_>, _>>()?;
        out.insert(s.clone(), opts);
    }
    Ok(out)
}

/// A scalar as one value, an array as a sweep of its scalars.
fn values(key: &str, v: &toml::Value) -> Result<Vec<String>, KeyError> {
    let bad = || (key.to_string(), "expected a string, number or boolean, or an array of them".to_string());
    match v {
        toml::Value::Array(a) if !a.is_empty() => a.iter().map(|x| if x.is_array() { None } else { value_to_param(x) }.ok_or_else(bad)).collect(),
        toml::Value::Array(_) => Err((key.to_string(), "an empty array sweeps nothing".into())),
        other => value_to_param(other).map(|s| vec![s]).ok_or_else(bad),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(text: &str) -> BTreeMap<String, toml::Value> {
        let t: toml::Table = text.parse().unwrap();
        t.into_iter().collect()
    }

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn shared_keys_go_only_to_the_strategies_that_take_them() {
        let m = expand(&table("ulysses_degree = 2"), &names(&["ring-p2p", "usp"])).unwrap();
        assert_eq!(m["ring-p2p"], vec![CpOptions::default()]);
        assert_eq!(m["usp"], vec![CpOptions { ulysses_degree: Some(2), ..Default::default() }]);
    }

    #[test]
    fn per_strategy_tables_sweep_their_arrays() {
        let m = expand(&table("sharding = \"zigzag\"\n[usp]\nulysses_degree = [2, 4]\ninner_ring = 2\n"), &names(&["usp", "ulysses"])).unwrap();
        let us: Vec<(Option<usize>, Option<usize>)> = m["usp"].iter().map(|o| (o.ulysses_degree, o.inner_ring)).collect();
        assert_eq!(us, vec![(Some(2), Some(2)), (Some(4), Some(2))]);
        assert!(m["usp"].iter().chain(&m["ulysses"]).all(|o| o.sharding == Some(crate::case::Sharding::Zigzag)));
        assert_eq!(m["ulysses"].len(), 1);
    }

    #[test]
    fn options_no_strategy_takes_are_bad_input() {
        let e = expand(&table("ulysses_degree = 2"), &names(&["ring-p2p"])).unwrap_err();
        assert_eq!(e.0, "ulysses_degree");
        assert!(e.1.contains("none of this grid's strategies"), "{e:?}");
        let e = expand(&table("[ring-p2p]\ninner_ring = 2"), &names(&["ring-p2p"])).unwrap_err();
        assert_eq!(e.0, "ring-p2p.inner_ring");
        assert!(e.1.contains("does not take `inner_ring`"), "{e:?}");
        let e = expand(&table("[usp]\nulysses_degree = 2"), &names(&["ring-p2p"])).unwrap_err();
        assert!(e.1.contains("nor a strategy of this grid"), "{e:?}");
        let e = expand(&table("[usp]\nulysses_degree = 0"), &names(&["usp"])).unwrap_err();
        assert!(e.1.starts_with("ulysses_degree:"), "{e:?}");
    }
}
