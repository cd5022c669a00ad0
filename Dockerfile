# Build the crier binary, then run it from a slim image as an unprivileged user.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin crier

FROM debian:bookworm-slim
RUN useradd --system --no-create-home crier
COPY --from=build /src/target/release/crier /usr/local/bin/crier
USER crier
ENV CRIER_LISTEN=0.0.0.0:8080 \
    CRIER_LOG_FORMAT=json
EXPOSE 8080
ENTRYPOINT ["crier"]
CMD ["serve"]
