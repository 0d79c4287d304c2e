"""EHR data: raw sources, cohort processing, the EHRDataModule and EHR-as-text prompts."""
