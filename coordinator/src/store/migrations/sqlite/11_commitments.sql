-- v11: a batch is committed in the transparency log when it is submitted. Its spec (name,
-- description, kernel, policy, axes, spot-check rate) is kept as the canonical JSON whose hash
-- the commitment carries, so a proof bundle can present it; batches from before have none.
-- The commitment is a log entry with unit_id 0 (unit ids start at 1).
ALTER TABLE batches ADD COLUMN spec TEXT;
-- The dashboard reads each witness's newest cosignature.
CREATE INDEX log_cosignatures_witness ON log_cosignatures(witness, size);
