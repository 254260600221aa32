/*
 * The few DPDK calls ustack needs, as plain functions: the burst functions
 * and the mbuf accessors are static inline in DPDK's headers, so Rust
 * cannot call them directly. One call per burst on the receive side; one
 * per frame to take an mbuf on the transmit side (from the pool's per-core
 * cache, no system call and no heap allocation).
 */
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <rte_eal.h>
#include <rte_errno.h>
#include <rte_ethdev.h>
#include <rte_lcore.h>
#include <rte_mbuf.h>
#include <rte_mempool.h>

/* What ustack learnt about a started port. */
struct ustack_dpdk_port {
	uint8_t mac[6];
	uint16_t mtu;
	uint8_t rx_csum;	/* IPv4/TCP/UDP receive checksum offload on */
	uint8_t tx_csum;	/* TCP/UDP transmit checksum offload on */
	int32_t intr_fd;	/* receive interrupt descriptor, -1 if none */
	uint16_t rxd, txd;	/* ring sizes after the driver's adjustment */
	char driver[32];
};

/* One received frame, as the burst call describes it. */
struct ustack_dpdk_rx {
	const uint8_t *data;
	uint32_t len;
	uint32_t flags;
};

#define USTACK_RX_SEGMENTED 1u
#define USTACK_RX_CSUM_GOOD 2u

int ustack_dpdk_eal_init(int argc, char **argv)
{
	int r = rte_eal_init(argc, argv);
	return r < 0 ? -rte_errno : r;
}

int ustack_dpdk_eal_cleanup(void)
{
	return rte_eal_cleanup();
}

const char *ustack_dpdk_runtime_dir(void)
{
	return rte_eal_get_runtime_dir();
}

const char *ustack_dpdk_strerror(int err)
{
	return rte_strerror(err);
}

/* The port named `name`, or a negative errno. */
int ustack_dpdk_port_by_name(const char *name)
{
	uint16_t port;
	int r = rte_eth_dev_get_port_by_name(name, &port);
	return r < 0 ? r : (int)port;
}

/* The first usable port at or after `from`, or -1 when there is none. */
int ustack_dpdk_next_port(uint32_t from)
{
	uint16_t p;
	if (from >= RTE_MAX_ETHPORTS)
		return -1;
	p = rte_eth_find_next((uint16_t)from);
	return p >= RTE_MAX_ETHPORTS ? -1 : (int)p;
}

int ustack_dpdk_port_name(uint16_t port, char *buf, size_t len)
{
	char name[RTE_ETH_NAME_MAX_LEN];
	int r = rte_eth_dev_get_name_by_port(port, name);
	if (r == 0)
		snprintf(buf, len, "%s", name);
	return r;
}

static int configure(uint16_t port, const struct rte_eth_dev_info *info, int intr,
		     struct ustack_dpdk_port *out)
{
	struct rte_eth_conf conf;
	const uint64_t rx_want = RTE_ETH_RX_OFFLOAD_IPV4_CKSUM | RTE_ETH_RX_OFFLOAD_TCP_CKSUM |
				 RTE_ETH_RX_OFFLOAD_UDP_CKSUM;
	const uint64_t tx_want = RTE_ETH_TX_OFFLOAD_TCP_CKSUM | RTE_ETH_TX_OFFLOAD_UDP_CKSUM;

	memset(&conf, 0, sizeof(conf));
	out->rx_csum = (info->rx_offload_capa & rx_want) == rx_want;
	out->tx_csum = (info->tx_offload_capa & tx_want) == tx_want;
	if (out->rx_csum)
		conf.rxmode.offloads |= rx_want;
	if (out->tx_csum)
		conf.txmode.offloads |= tx_want;
	conf.intr_conf.rxq = intr ? 1 : 0;
	return rte_eth_dev_configure(port, 1, 1, &conf);
}

/*
 * Configure one receive and one transmit queue on `port` with `pool`'s
 * mbufs, the checksum offloads the port reports, receive interrupts when
 * `intr` and the driver has them, and start it. On failure, a negative
 * errno and what failed in `err`.
 */
int ustack_dpdk_port_start(uint16_t port, struct rte_mempool *pool, uint16_t rxd, uint16_t txd, int promisc,
			   int intr, struct ustack_dpdk_port *out, char *err, size_t errlen)
{
	struct rte_eth_dev_info info;
	struct rte_ether_addr mac;
	/* SOCKET_ID_ANY (-1) where the port has no NUMA node. */
	unsigned socket = (unsigned)rte_eth_dev_socket_id(port);
	int r;

	memset(out, 0, sizeof(*out));
	out->intr_fd = -1;
	r = rte_eth_dev_info_get(port, &info);
	if (r != 0) {
		snprintf(err, errlen, "reading the port's facts: %s", rte_strerror(-r));
		return r;
	}
	snprintf(out->driver, sizeof(out->driver), "%s", info.driver_name ? info.driver_name : "?");
	r = configure(port, &info, intr, out);
	if (r != 0 && intr) {
		intr = 0;
		r = configure(port, &info, 0, out);
	}
	if (r != 0) {
		snprintf(err, errlen, "configuring the port: %s", rte_strerror(-r));
		return r;
	}
	r = rte_eth_dev_adjust_nb_rx_tx_desc(port, &rxd, &txd);
	if (r != 0) {
		snprintf(err, errlen, "sizing the rings: %s", rte_strerror(-r));
		return r;
	}
	out->rxd = rxd;
	out->txd = txd;
	r = rte_eth_rx_queue_setup(port, 0, rxd, socket, NULL, pool);
	if (r != 0) {
		snprintf(err, errlen, "setting up the receive queue: %s", rte_strerror(-r));
		return r;
	}
	r = rte_eth_tx_queue_setup(port, 0, txd, socket, NULL);
	if (r != 0) {
		snprintf(err, errlen, "setting up the transmit queue: %s", rte_strerror(-r));
		return r;
	}
	r = rte_eth_dev_start(port);
	if (r != 0) {
		snprintf(err, errlen, "starting the port: %s", rte_strerror(-r));
		return r;
	}
	/* The stack has its own MAC: let frames for it in. Not every driver can. */
	if (promisc) {
		(void)rte_eth_promiscuous_enable(port);
		(void)rte_eth_allmulticast_enable(port);
	}
	if (intr && rte_eth_dev_rx_intr_enable(port, 0) == 0)
		out->intr_fd = rte_eth_dev_rx_intr_ctl_q_get_fd(port, 0);
	if (out->intr_fd < 0)
		out->intr_fd = -1;
	if (rte_eth_macaddr_get(port, &mac) == 0)
		memcpy(out->mac, mac.addr_bytes, 6);
	if (rte_eth_dev_get_mtu(port, &out->mtu) != 0)
		out->mtu = RTE_ETHER_MTU;
	return 0;
}

void ustack_dpdk_port_close(uint16_t port)
{
	(void)rte_eth_dev_stop(port);
	(void)rte_eth_dev_close(port);
}

struct rte_mempool *ustack_dpdk_pool_create(const char *name, unsigned n, int port)
{
	int socket = rte_eth_dev_socket_id((uint16_t)port);
	return rte_pktmbuf_pool_create(name, n, n >= 512 ? 256 : 0, 0, RTE_MBUF_DEFAULT_BUF_SIZE,
				       socket < 0 ? SOCKET_ID_ANY : socket);
}

void ustack_dpdk_pool_free(struct rte_mempool *pool)
{
	rte_mempool_free(pool);
}

/* Bytes a single-segment frame can have. */
uint32_t ustack_dpdk_pool_room(struct rte_mempool *pool)
{
	return rte_pktmbuf_data_room_size(pool) - RTE_PKTMBUF_HEADROOM;
}

int ustack_dpdk_errno(void)
{
	return rte_errno;
}

/* Receive up to `n` frames and describe each in `d`. */
uint16_t ustack_dpdk_rx_burst(uint16_t port, struct rte_mbuf **pkts, struct ustack_dpdk_rx *d, uint16_t n)
{
	uint16_t got = rte_eth_rx_burst(port, 0, pkts, n);
	for (uint16_t i = 0; i < got; i++) {
		const struct rte_mbuf *m = pkts[i];
		uint64_t ol = m->ol_flags;
		uint32_t flags = 0;
		if (m->nb_segs > 1)
			flags |= USTACK_RX_SEGMENTED;
		if ((ol & RTE_MBUF_F_RX_IP_CKSUM_MASK) == RTE_MBUF_F_RX_IP_CKSUM_GOOD &&
		    (ol & RTE_MBUF_F_RX_L4_CKSUM_MASK) == RTE_MBUF_F_RX_L4_CKSUM_GOOD)
			flags |= USTACK_RX_CSUM_GOOD;
		d[i].data = rte_pktmbuf_mtod(m, const uint8_t *);
		d[i].len = m->data_len;
		d[i].flags = flags;
	}
	return got;
}

/* An mbuf holding `len` bytes (to be written through `*data`), or NULL when the pool is empty. */
struct rte_mbuf *ustack_dpdk_tx_alloc(struct rte_mempool *pool, uint16_t len, uint8_t **data)
{
	struct rte_mbuf *m = rte_pktmbuf_alloc(pool);
	if (m == NULL)
		return NULL;
	*data = (uint8_t *)rte_pktmbuf_append(m, len);
	if (*data == NULL) {
		rte_pktmbuf_free(m);
		return NULL;
	}
	return m;
}

/*
 * Ask the port to finish the L4 checksum of `m`: the L3 header starts at
 * `l2_len`, the L4 header at `l2_len + l3_len`, and the checksum field
 * holds the pseudo-header sum (as DPDK and virtio both expect).
 */
void ustack_dpdk_tx_csum(struct rte_mbuf *m, uint16_t l2_len, uint16_t l3_len, int ipv6, int tcp)
{
	m->l2_len = l2_len;
	m->l3_len = l3_len;
	m->ol_flags |= (ipv6 ? RTE_MBUF_F_TX_IPV6 : RTE_MBUF_F_TX_IPV4) |
		       (tcp ? RTE_MBUF_F_TX_TCP_CKSUM : RTE_MBUF_F_TX_UDP_CKSUM);
}

uint16_t ustack_dpdk_tx_burst(uint16_t port, struct rte_mbuf **pkts, uint16_t n)
{
	return rte_eth_tx_burst(port, 0, pkts, n);
}

void ustack_dpdk_free(struct rte_mbuf **pkts, unsigned n)
{
	rte_pktmbuf_free_bulk(pkts, n);
}

/* The port's own counters. */
struct ustack_dpdk_stats {
	uint64_t ipackets, opackets, ibytes, obytes, imissed, ierrors, oerrors, rx_nombuf;
};

int ustack_dpdk_port_stats(uint16_t port, struct ustack_dpdk_stats *out)
{
	struct rte_eth_stats s;
	int r = rte_eth_stats_get(port, &s);
	if (r != 0)
		return r;
	out->ipackets = s.ipackets;
	out->opackets = s.opackets;
	out->ibytes = s.ibytes;
	out->obytes = s.obytes;
	out->imissed = s.imissed;
	out->ierrors = s.ierrors;
	out->oerrors = s.oerrors;
	out->rx_nombuf = s.rx_nombuf;
	return 0;
}
