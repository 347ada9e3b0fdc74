//! `export`: a query's result written as Parquet or CSV files under an object-store URL (a
//! local `file://` directory or `s3://bucket/prefix/` reached with the storage settings).

use arrow::array::{Array, UInt64Array};
use async_trait::async_trait;
use datafusion::dataframe::DataFrameWriteOptions;
use serde::Deserialize;
use url::Url;

use super::window::{Plan, WindowParams};
use super::{JobKind, Outcome, RunContext};
use crate::config::Job;
use crate::{Error, Result};

#[derive(Debug)]
pub(crate) struct Export;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {
    sql: String,
    /// A directory URL (templates allowed, e.g. `s3://bucket/exports/{{ window_end_text }}/`).
    url: String,
    #[serde(default = "parquet")]
    format: String,
    #[serde(default)]
    window: Option<String>,
    #[serde(default)]
    delay: Option<String>,
    #[serde(default)]
    lookback: Option<String>,
    #[serde(default)]
    initial: Option<String>,
    #[serde(default)]
    open: bool,
}

fn parquet() -> String {
    "parquet".into()
}

impl Params {
    fn window_params(&self) -> WindowParams {
        WindowParams {
            window: self.window.clone(),
            delay: self.delay.clone(),
            lookback: self.lookback.clone(),
            initial: self.initial.clone(),
            open: self.open,
        }
    }
}

fn parse_url(job: &str, text: &str) -> Result<Url> {
    let key = format!("jobs.{job}.params.url");
    let url = if text.starts_with('/') {
        Url::from_directory_path(text)
            .map_err(|()| Error::config(&key, format!("{text:?} is not a directory path")))?
    } else {
        Url::parse(text).map_err(|e| Error::config(&key, format!("{text:?}: {e}")))?
    };
    if !matches!(url.scheme(), "file" | "s3" | "s3a") {
        return Err(Error::config(
            key,
            format!("{text:?}: exports go to file:// or s3:// URLs"),
        ));
    }
    Ok(url)
}

#[async_trait]
impl JobKind for Export {
    fn name(&self) -> &'static str {
        "export"
    }

    fn check(&self, job: &Job) -> Result<()> {
        let p: Params = job.params()?;
        p.window_params().spec(&job.name)?;
        if !matches!(p.format.as_str(), "parquet" | "csv") {
            return Err(Error::config(
                format!("jobs.{}.params.format", job.name),
                format!("{:?} is not one of parquet, csv", p.format),
            ));
        }
        if !p.url.contains("{{") {
            parse_url(&job.name, &p.url)?;
        }
        Ok(())
    }

    async fn run(&self, ctx: RunContext) -> Result<Outcome> {
        let job = ctx.job.name.clone();
        let p: Params = ctx.job.params()?;
        let window = match p.window_params().plan(&ctx)? {
            Plan::Run(w) => w,
            Plan::UpToDate => return Ok(Outcome::up_to_date()),
        };
        let sql = super::render_template(&job, &p.sql, window, ctx.fire_time)?;
        let mut url_text = super::render_template(&job, &p.url, window, ctx.fire_time)?;
        if !url_text.ends_with('/') {
            url_text.push('/');
        }
        let url = parse_url(&job, &url_text)?;
        let engine = ctx.engine()?;
        let store = lake::url_store(engine.storage(), &url)?;
        if url.scheme() != "file" {
            engine
                .session()
                .runtime_env()
                .register_object_store(&url, store);
        }
        let df = engine.sql(&sql).await?;
        let options = DataFrameWriteOptions::new();
        let written = match p.format.as_str() {
            "csv" => df.write_csv(url.as_str(), options, None).await?,
            _ => df.write_parquet(url.as_str(), options, None).await?,
        };
        let rows: u64 = written
            .iter()
            .filter_map(|b| {
                b.column(0)
                    .as_any()
                    .downcast_ref::<UInt64Array>()
                    .map(|a| (0..a.len()).map(|i| a.value(i)).sum::<u64>())
            })
            .sum();
        Ok(Outcome {
            rows_written: rows,
            detail: format!("{rows} rows as {} to {url}", p.format),
            window,
            ..Outcome::default()
        })
    }
}
