"""The Scrapy project that builds the labelled image dataset (run by `pipeline.stages.scrape`)."""
