//! Owns telling who asks for a recorded intent or store change when `--actor` is not given:
//! the login name from the environment, else the OS account, else the kubeconfig's user.

use kube::config::Kubeconfig;

/// The first non-blank candidate, trimmed. Candidates are evaluated lazily, in order, so a
/// later source (reading the kubeconfig) is only consulted when the earlier ones say nothing.
pub(crate) fn first_named(candidates: impl IntoIterator<Item = Option<String>>) -> Option<String> {
    candidates
        .into_iter()
        .flatten()
        .map(|name| name.trim().to_string())
        .find(|name| !name.is_empty())
}

/// The actor: `given` (`--actor`), else `$USER`, `$USERNAME`, the OS account of this process
/// (its uid looked up in the account database: in a Pod or CI job `$USER` is often unset while
/// the uid has a name), else the user of the default kubeconfig's current context.
pub(crate) fn resolve(given: Option<String>) -> Option<String> {
    let sources: [&dyn Fn() -> Option<String>; 5] = [
        &|| given.clone(),
        &|| std::env::var("USER").ok(),
        &|| std::env::var("USERNAME").ok(),
        &|| whoami::username().ok(),
        &kubeconfig_user,
    ];
    first_named(sources.iter().map(|source| source()))
}

/// The actor, or an error that says how to give one.
pub(crate) fn require(given: Option<String>) -> anyhow::Result<String> {
    resolve(given).ok_or_else(|| {
        anyhow::anyhow!(
            "cannot tell who asks: $USER is not set, this process's uid has no account name \
             and the kubeconfig names no user; give --actor NAME"
        )
    })
}

/// The user name of the current context in the kubeconfig kube would read by default
/// ($KUBECONFIG, else ~/.kube/config).
fn kubeconfig_user() -> Option<String> {
    current_user(&Kubeconfig::read().ok()?)
}

fn current_user(config: &Kubeconfig) -> Option<String> {
    let current = config.current_context.as_deref()?;
    let context = config.contexts.iter().find(|c| c.name == current)?;
    context.context.as_ref()?.user.clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_named_candidate_wins() {
        let got = first_named([None, Some("alice".into()), Some("bob".into())]);
        assert_eq!(got.as_deref(), Some("alice"));
    }

    #[test]
    fn blank_candidates_are_skipped_and_names_trimmed() {
        let got = first_named([Some("".into()), Some("  ".into()), Some(" carol\n".into())]);
        assert_eq!(got.as_deref(), Some("carol"));
    }

    #[test]
    fn no_candidate_is_none() {
        assert_eq!(first_named([None, Some(" ".into())]), None);
        assert_eq!(first_named(Vec::new()), None);
    }

    #[test]
    fn later_sources_are_not_consulted_once_one_names_someone() {
        let asked = std::cell::Cell::new(0);
        let source = |name: Option<&str>| {
            asked.set(asked.get() + 1);
            name.map(str::to_string)
        };
        let got = first_named([Some("dave"), None, Some("erin")].into_iter().map(source));
        assert_eq!(got.as_deref(), Some("dave"));
        assert_eq!(asked.get(), 1);
    }

    #[test]
    fn the_kubeconfig_user_is_the_current_contexts() {
        let config: Kubeconfig = serde_yaml_kube(
            "apiVersion: v1\nkind: Config\ncurrent-context: prod\n\
             contexts:\n- name: dev\n  context: {cluster: c, user: dev-user}\n\
             - name: prod\n  context: {cluster: c, user: frank@prod}\n",
        );
        assert_eq!(current_user(&config).as_deref(), Some("frank@prod"));
    }

    #[test]
    fn a_kubeconfig_without_a_current_context_names_nobody() {
        let config = serde_yaml_kube(
            "apiVersion: v1\nkind: Config\ncontexts:\n- name: dev\n  context: {cluster: c, user: u}\n",
        );
        assert_eq!(current_user(&config), None);
        let dangling = serde_yaml_kube("apiVersion: v1\nkind: Config\ncurrent-context: gone\n");
        assert_eq!(current_user(&dangling), None);
    }

    fn serde_yaml_kube(text: &str) -> Kubeconfig {
        Kubeconfig::from_yaml(text).unwrap()
    }
}
