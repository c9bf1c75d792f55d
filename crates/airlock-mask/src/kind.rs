//! The kinds of secret or personal data a placeholder can name.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// What a masked span was. Its [`Display`](fmt::Display) form is the placeholder name,
/// e.g. `AWS_SECRET_KEY` in `[AWS_SECRET_KEY#9f2c]`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Kind {
    /// A password: URL userinfo, `--password`, `PGPASSWORD=`, `mysql -p…`.
    Password,
    /// A generic secret value: a field whose name looks secret (`*_TOKEN`, `api_key`, …),
    /// a secret query parameter, or a high-entropy string next to a secret keyword.
    Secret,
    /// The credential of an `Authorization` / `Proxy-Authorization` header.
    AuthHeader,
    /// A cookie value.
    Cookie,
    /// AWS access key id (`AKIA…`, `ASIA…`).
    AwsAccessKeyId,
    /// AWS secret access key.
    AwsSecretKey,
    /// Google API key (`AIza…`).
    GcpApiKey,
    /// Azure storage / service bus shared key.
    AzureKey,
    /// GitHub token (`ghp_`, `gho_`, `ghs_`, `ghu_`, `ghr_`, `github_pat_`).
    GithubToken,
    /// GitLab personal access token (`glpat-`).
    GitlabToken,
    /// Slack token (`xox?-`) or incoming-webhook path.
    SlackToken,
    /// Stripe secret / restricted key or webhook secret.
    StripeKey,
    /// OpenAI-style API key (`sk-…`, `sk-proj-…`).
    OpenaiKey,
    /// Anthropic API key (`sk-ant-…`).
    AnthropicKey,
    /// npm access token (`npm_…`).
    NpmToken,
    /// JSON Web Token.
    Jwt,
    /// PEM private key block.
    PrivateKey,
    /// E-mail address.
    Email,
    /// Phone number.
    Phone,
    /// Payment card number (Luhn-valid).
    CreditCard,
    /// IBAN (mod-97-valid).
    Iban,
    /// US social security number.
    UsSsn,
    /// IPv4 address (off by default).
    IpAddress,
    /// A detector from the configuration; the string is its name.
    Custom(Arc<str>),
}

impl Kind {
    /// All built-in kinds, for reports.
    pub const BUILTIN: &'static [Kind] = &[
        Kind::Password,
        Kind::Secret,
        Kind::AuthHeader,
        Kind::Cookie,
        Kind::AwsAccessKeyId,
        Kind::AwsSecretKey,
        Kind::GcpApiKey,
        Kind::AzureKey,
        Kind::GithubToken,
        Kind::GitlabToken,
        Kind::SlackToken,
        Kind::StripeKey,
        Kind::OpenaiKey,
        Kind::AnthropicKey,
        Kind::NpmToken,
        Kind::Jwt,
        Kind::PrivateKey,
        Kind::Email,
        Kind::Phone,
        Kind::CreditCard,
        Kind::Iban,
        Kind::UsSsn,
        Kind::IpAddress,
    ];

    /// The placeholder name.
    #[must_use]
    pub fn name(&self) -> &str {
        match self {
            Kind::Password => "PASSWORD",
            Kind::Secret => "SECRET",
            Kind::AuthHeader => "AUTH_HEADER",
            Kind::Cookie => "COOKIE",
            Kind::AwsAccessKeyId => "AWS_ACCESS_KEY_ID",
            Kind::AwsSecretKey => "AWS_SECRET_KEY",
            Kind::GcpApiKey => "GCP_API_KEY",
            Kind::AzureKey => "AZURE_KEY",
            Kind::GithubToken => "GITHUB_TOKEN",
            Kind::GitlabToken => "GITLAB_TOKEN",
            Kind::SlackToken => "SLACK_TOKEN",
            Kind::StripeKey => "STRIPE_KEY",
            Kind::OpenaiKey => "OPENAI_KEY",
            Kind::AnthropicKey => "ANTHROPIC_KEY",
            Kind::NpmToken => "NPM_TOKEN",
            Kind::Jwt => "JWT",
            Kind::PrivateKey => "PRIVATE_KEY",
            Kind::Email => "EMAIL",
            Kind::Phone => "PHONE",
            Kind::CreditCard => "CREDIT_CARD",
            Kind::Iban => "IBAN",
            Kind::UsSsn => "US_SSN",
            Kind::IpAddress => "IP_ADDRESS",
            Kind::Custom(name) => name,
        }
    }

    /// Parses a placeholder name; unknown names become [`Kind::Custom`].
    #[must_use]
    pub fn from_name(name: &str) -> Kind {
        Kind::BUILTIN
            .iter()
            .find(|k| k.name() == name)
            .cloned()
            .unwrap_or_else(|| Kind::Custom(Arc::from(name)))
    }

    /// How specific the kind is: when spans overlap, the merged span takes the kind with
    /// the highest rank (a `ghp_` token in a `--token` flag is a `GITHUB_TOKEN`).
    pub(crate) fn rank(&self) -> u8 {
        match self {
            Kind::PrivateKey => 90,
            Kind::Custom(_) => 85,
            Kind::AwsAccessKeyId
            | Kind::AwsSecretKey
            | Kind::GcpApiKey
            | Kind::AzureKey
            | Kind::GithubToken
            | Kind::GitlabToken
            | Kind::SlackToken
            | Kind::StripeKey
            | Kind::AnthropicKey
            | Kind::NpmToken => 80,
            Kind::OpenaiKey => 79,
            Kind::Jwt => 70,
            Kind::CreditCard | Kind::Iban | Kind::UsSsn => 60,
            Kind::Password => 50,
            Kind::AuthHeader | Kind::Cookie => 45,
            Kind::Secret => 40,
            Kind::Email => 30,
            Kind::Phone => 20,
            Kind::IpAddress => 10,
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl Serialize for Kind {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl<'de> Deserialize<'de> for Kind {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        Ok(Kind::from_name(&name))
    }
}
