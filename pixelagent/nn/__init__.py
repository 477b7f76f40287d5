"""Neural building blocks shared by the model plugins (imports torch: import it inside builders).

Parts that train are ``torch.nn.Module`` s as well as :mod:`pixelagent.parts` parts; besides the
per-session inference methods they implement batch methods that
:class:`pixelagent.nn.model.SegmentationModel` composes into one trainable model:

- visual encoder: ``encode_batch(images: list[np.ndarray]) -> Tensor (B, N, C_vis)``,
  attribute ``out_dim`` (C_vis) and ``num_tokens`` (N);
- mask decoder: ``embed_batch(images) -> ImageEmbeddings`` and
  ``predict_logits(embeddings, prompt_embeddings: list[Tensor (n_i, 256)]) -> list[Tensor (n_i, H_i, W_i)]``;
- LLM backbone: ``forward_train(...)`` returning the text loss and the last hidden states;
- alignment strategy: ``embed(hidden (T, d), token_ids (T,)) -> Tensor (n_seg, 256)``.
"""
